"""docker-compose.yml agrees with the settings the code reads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from typeahead.settings import ENV_ALIASES, ENV_PREFIX, Settings

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"
KNOWN_EXTERNAL = {"HF_HUB_OFFLINE"}
VLLM = ("vllm-0", "vllm-1")


def compose(path: Path = COMPOSE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_services_and_replicas() -> None:
    services = compose()["services"]
    assert set(services) == {"redis", *VLLM, "api", "worker", "lb"}
    assert services["api"]["deploy"]["replicas"] > 1
    assert services["worker"]["deploy"]["replicas"] > 1
    gpus = []
    for name in VLLM:
        assert services[name]["image"].startswith("vllm/vllm-openai")
        device = services[name]["deploy"]["resources"]["reservations"]["devices"][0]
        assert device["capabilities"] == ["gpu"]
        gpus.extend(device["device_ids"])
    assert len(set(gpus)) == len(VLLM), "each replica gets its own GPU"
    assert set(VLLM) <= set(services["worker"]["depends_on"])


def test_every_variable_is_a_setting_and_parses() -> None:
    services = compose()["services"]
    names = {ENV_ALIASES.get(f, ENV_PREFIX + f.upper()) for f in Settings.__dataclass_fields__}
    for service in ("api", "worker"):
        env = {k: str(v) for k, v in services[service]["environment"].items()}
        unknown = set(env) - names - KNOWN_EXTERNAL
        assert not unknown, f"{service}: not read by Settings: {unknown}"
        settings = Settings.from_env(environ=env)
        assert settings.redis_url and settings.llm_url


def test_urls_point_at_the_services_and_ports() -> None:
    services = compose()["services"]
    settings = Settings.from_env(environ={k: str(v) for k, v in
                                          services["api"]["environment"].items()})
    assert settings.redis_url is not None and settings.llm_url is not None
    redis_url = urlparse(settings.redis_url)
    assert redis_url.hostname == "redis"
    assert str(redis_url.port) == flag(services["redis"]["command"], "--port")
    urls = [urlparse(u) for u in settings.llm_url.split(",")]
    assert [u.hostname for u in urls] == list(VLLM)
    for url, name in zip(urls, VLLM, strict=True):
        vllm_cmd = services[name]["command"]
        assert str(url.port) == flag(vllm_cmd, "--port")
        assert settings.llm_model == flag(vllm_cmd, "--model")
        assert "--enable-prefix-caching" in vllm_cmd
        assert json.loads(flag(vllm_cmd, "--speculative-config"))["method"] == "ngram"
    api_port = flag(services["api"]["command"], "--port")
    assert api_port in [str(p) for p in services["api"]["expose"]]
    conf = compose()["configs"]["nginx_conf"]["content"]
    assert re.search(rf"server api:{api_port};", conf)
    assert "proxy_buffering off" in conf
    assert services["lb"]["ports"] == ["8080:80"]
    assert flag(services["worker"]["command"], "--index") == settings.index_dir.as_posix()
