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
CLUSTER = COMPOSE.with_name("docker-compose.cluster.yml")
KNOWN_EXTERNAL = {"HF_HUB_OFFLINE"}
VLLM = ("vllm-0", "vllm-1")


def compose(path: Path = COMPOSE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def merged_env(service: str) -> dict[str, str]:
    """The service's environment with docker-compose.cluster.yml laid over it, as compose
    merges a second -f file's environment map into the first's."""
    base = compose()["services"][service]["environment"]
    extra = compose(CLUSTER)["services"][service]["environment"]
    return {k: str(v) for k, v in {**base, **extra}.items()}


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


def test_the_cluster_file_makes_a_six_node_cluster_the_services_use() -> None:
    cluster = compose(CLUSTER)["services"]
    nodes = sorted(n for n in cluster if re.fullmatch(r"redis-\d", n))
    assert len(nodes) == 6
    for name in nodes:
        assert flag(cluster[name]["command"], "--cluster-enabled") == "yes"
    init = cluster["redis-cluster-init"]
    script = " ".join(init["command"])
    assert "--cluster create" in script and "--cluster-replicas 1" in script
    assert all(f"{n}:6379" in script for n in nodes)
    assert set(init["depends_on"]) == set(nodes)
    names = {ENV_ALIASES.get(f, ENV_PREFIX + f.upper()) for f in Settings.__dataclass_fields__}
    for service in ("api", "worker"):
        env = merged_env(service)
        assert set(env) - names - KNOWN_EXTERNAL == set()
        settings = Settings.from_env(environ=env)
        assert settings.redis_cluster
        assert urlparse(settings.redis_url).hostname in nodes
        assert cluster[service]["depends_on"]["redis-cluster-init"]["condition"] \
            == "service_completed_successfully"
