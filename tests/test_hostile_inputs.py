"""Inputs that used to answer 500, and API keys that used to buy a fresh rate-limit bucket each.

Each request goes through the full app (error middleware included) on a real port; the ones
aiohttp's client would refuse to send are written to the socket by hand."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.lexical_fixtures import build_small_index
from tests.redis_server import RedisServer
from typeahead.http.app import create_app
from typeahead.settings import Settings
from typeahead.suggest.service import SuggestService

Client = TestClient[Any, Any]
TOKEN = "adm1n"
JOB = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> SuggestService:
    return SuggestService(index=build_small_index(tmp_path_factory.mktemp("hostile")),
                          results_k=0)


@contextlib.asynccontextmanager
async def client_for(service: SuggestService, **overrides: Any) -> AsyncIterator[Client]:
    base: dict[str, Any] = {"generation": False, "admin_token": TOKEN,
                            "index_dir": service.index.path}
    base.update(overrides)
    client: Client = TestClient(TestServer(create_app(Settings.from_env(environ={}, **base),
                                                      service)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def raw_request(client: Client, data: bytes) -> tuple[int, bytes]:
    """Send bytes as they are; the status and body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def code_of(resp: Any) -> str:
    return str((await resp.json())["error"]["code"])


# --- 500s that were -------------------------------------------------------------------------


async def test_a_huge_last_event_id_is_400(service: SuggestService,
                                           redis_server: RedisServer) -> None:
    async with client_for(service, generation=True, redis_url=redis_server.url) as client:
        for value in ("9" * 4301, "1-" + "9" * 5000, "9" * 21):
            resp = await client.get(f"/v1/generate/{JOB}/stream",
                                    headers={"Last-Event-ID": value})
            assert resp.status == 400, await resp.text()
            assert await code_of(resp) == "invalid_parameter"


@pytest.mark.parametrize("token", [b"\xc3\xa9t\xc3\xa9", b"\xff\xfe", b"adm1n\xff"])
async def test_a_non_ascii_authorization_header_is_401(service: SuggestService,
                                                       token: bytes) -> None:
    async with client_for(service) as client:
        status, body = await raw_request(client, (
            b"POST /admin/reload HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + token +
            b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
    assert status == 401 and b'"unauthorized"' in body


@pytest.mark.parametrize("path", ["/v1/generate", "/admin/reload"])
async def test_a_body_that_does_not_inflate_is_400(service: SuggestService,
                                                   redis_server: RedisServer, path: str) -> None:
    headers = {"Content-Type": "application/json", "Content-Encoding": "deflate",
               "Authorization": f"Bearer {TOKEN}"}
    async with client_for(service, generation=True, redis_url=redis_server.url) as client:
        resp = await client.post(path, data=b"this is not deflate", headers=headers)
        assert resp.status == 400, await resp.text()
        assert await code_of(resp) == "invalid_content_encoding"
        # A well-formed deflate body still works.
        good = zlib.compress(b'{"query": "what is the rhine"}')
        resp = await client.post("/v1/generate", data=good, headers=headers)
        assert resp.status in (200, 202), await resp.text()


# --- API keys and the generate rate limit ---------------------------------------------------


async def test_unknown_api_keys_are_refused_when_keys_are_configured(
    service: SuggestService, redis_server: RedisServer,
) -> None:
    async with client_for(service, generation=True, redis_url=redis_server.url,
                          generate_rate_per_min=2, api_keys=("k-alice",)) as client:
        for i in range(5):
            resp = await client.post("/v1/generate", json={"query": f"what is {i}"},
                                     headers={"X-API-Key": f"made-up-{i}"})
            assert resp.status == 401 and await code_of(resp) == "invalid_api_key"
        statuses = [(await client.post("/v1/generate", json={"query": f"q {i}"},
                                       headers={"X-API-Key": "k-alice"})).status
                    for i in range(3)]
        assert statuses == [202, 202, 429]


async def test_keys_are_ignored_when_none_are_configured(
    service: SuggestService, redis_server: RedisServer,
) -> None:
    """A fresh key per request used to get a fresh bucket: now the address is the client."""
    async with client_for(service, generation=True, redis_url=redis_server.url,
                          generate_rate_per_min=2) as client:
        statuses = [(await client.post("/v1/generate", json={"query": f"what is {i}"},
                                       headers={"X-API-Key": f"key-{i}"})).status
                    for i in range(4)]
    assert statuses == [202, 202, 429, 429]


def test_api_keys_setting_reads_a_comma_separated_list() -> None:
    settings = Settings.from_env(environ={"TYPEAHEAD_API_KEYS": "a1, b2 ,,c3"})
    assert settings.api_keys == ("a1", "b2", "c3")
