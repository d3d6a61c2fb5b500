"""/readyz reflects the dependencies: it flips to 503 when Redis stops and back when it
returns; the LLM server is probed when configured; /healthz stays up throughout."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from tests.gen_support import settings_for, standin_server
from tests.lexical_fixtures import build_small_index
from tests.redis_server import RedisServer, free_port
from tests.vllm_standin import StandIn
from typeahead.http.app import create_app
from typeahead.suggest.service import SuggestService


async def wait_status(client: TestClient, want: int, timeout: float = 10.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await client.get("/readyz")
        body = await resp.json()
        if resp.status == want or asyncio.get_running_loop().time() > deadline:
            assert resp.status == want, body
            if want == 503:
                assert resp.headers["Retry-After"]
            return dict(body)
        await asyncio.sleep(0.1)


async def test_readiness_follows_redis(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = settings_for(redis_server.url, semantic=False)
    app = create_app(settings, SuggestService(index=build_small_index(tmp_path), semantic=False))
    async with TestClient(TestServer(app)) as client:
        body = await wait_status(client, 200)
        assert body["checks"] == {"index": "ok", "redis": "ok"}
        redis_server.stop()
        body = await wait_status(client, 503)
        assert body["error"]["code"] == "not_ready" and "redis" in body["error"]["message"]
        assert (await client.get("/healthz")).status == 200  # liveness is not readiness
        # The millisecond tier keeps answering while the generation store is down.
        assert (await client.get("/v1/suggest", params={"q": "new"})).status == 200
        redis_server.start()
        await wait_status(client, 200)


async def test_readiness_probes_the_llm_when_configured(
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    index = build_small_index(tmp_path)
    async with standin_server(StandIn()) as url:
        settings = settings_for(redis_server.url, llm_url=url + "/v1", semantic=False)
        app = create_app(settings, SuggestService(index=index, semantic=False))
        async with TestClient(TestServer(app)) as client:
            body = await wait_status(client, 200)
            assert body["checks"]["llm"] == "ok"
    dead = f"http://127.0.0.1:{free_port()}"
    settings = settings_for(redis_server.url, llm_url=dead, semantic=False)
    app = create_app(settings, SuggestService(index=index, semantic=False))
    async with TestClient(TestServer(app)) as client:
        body = await wait_status(client, 503)
        assert "LLM server unreachable" in body["error"]["message"]
