"""Limits and abuse at the HTTP edge: sizes, types, depth, rate limits, CORS, headers, admin."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.lexical_fixtures import build_small_index
from tests.redis_server import RedisServer
from typeahead.http import reload
from typeahead.http.app import create_app
from typeahead.http.limits import MAX_JSON_DEPTH, json_depth
from typeahead.http.ratelimit import TokenBucket
from typeahead.settings import Settings
from typeahead.suggest.service import SuggestService

Client = TestClient[Any, Any]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> SuggestService:
    return SuggestService(index=build_small_index(tmp_path_factory.mktemp("limits")), results_k=0)


@contextlib.asynccontextmanager
async def client_for(service: SuggestService, **overrides: Any) -> AsyncIterator[Client]:
    base: dict[str, Any] = {"generation": False}
    base.update(overrides)
    settings = Settings.from_env(environ={}, **base)
    client: Client = TestClient(TestServer(create_app(settings, service)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def error_of(resp: Any) -> dict[str, str]:
    body = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return dict(body["error"])


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


# --- unit: the token bucket and the depth measure --------------------------------------------


def test_token_bucket_allows_the_burst_then_refills() -> None:
    bucket = TokenBucket(60)  # one a second, burst 60
    assert all(bucket.take("a", now=0.0) == 0.0 for _ in range(60))
    assert bucket.take("a", now=0.0) == pytest.approx(1.0)
    assert bucket.take("b", now=0.0) == 0.0  # other clients are not affected
    assert bucket.take("a", now=1.0) == 0.0  # one token came back
    assert bucket.take("a", now=1.0) > 0


def test_token_bucket_is_bounded_and_zero_disables() -> None:
    bucket = TokenBucket(1, max_keys=100)
    for i in range(1000):
        bucket.take(f"client-{i}", now=0.0)
    assert len(bucket) == 100
    off = TokenBucket(0)
    assert all(off.take("a", now=0.0) == 0.0 for _ in range(1000)) and len(off) == 0


def test_json_depth() -> None:
    assert json_depth("x", 10) == 0
    assert json_depth({}, 10) == 1
    assert json_depth({"a": [1, {"b": []}]}, 10) == 4
    assert json_depth(nested(50), 10) == 10  # stops counting at the limit


# --- bodies: 413, 415, depth -------------------------------------------------------------------


async def post_raw(client: Client, body: bytes, content_type: str | None) -> Any:
    headers = {"Content-Type": content_type} if content_type else {}
    return await client.post("/v1/generate", data=body, headers=headers)


@pytest.mark.parametrize(
    ("body", "ctype", "status", "code"),
    [
        (b"x" * 20_000, "application/json", 413, "payload_too_large"),
        (b'{"query": "a"}', "text/plain", 415, "unsupported_media_type"),
        (b"query=a", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (
            orjson.dumps({"query": "a", "x": nested(MAX_JSON_DEPTH)}),
            "application/json",
            400,
            "json_too_deep",
        ),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400, "invalid_body"),
    ],
)
async def test_bad_bodies_are_refused_before_the_handler(
    service: SuggestService,
    body: bytes,
    ctype: str,
    status: int,
    code: str,
) -> None:
    # generation=False: /v1/generate does not exist, so only the edge checks can answer 4xx
    # other than 404; the POST goes to the admin route, which also takes a JSON body.
    async with client_for(service, admin_token="t") as client:
        resp = await client.post(
            "/admin/reload", data=body, headers={"Content-Type": ctype, "Authorization": "Bearer t"}
        )
        if code == "invalid_body":
            assert resp.status in (400, 413)  # too deep for the JSON parser itself
        else:
            assert resp.status == status, await resp.text()
            assert (await error_of(resp))["code"] == code


async def test_a_chunked_body_over_the_limit_is_413(service: SuggestService) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 1024

    async with client_for(service, admin_token="t") as client:
        resp = await client.post(
            "/admin/reload",
            data=chunks(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer t"},
        )
        assert resp.status == 413
        assert (await error_of(resp))["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("x" * 201, 400, "query_too_long"),
        ("k=0", 400, "invalid_parameter"),
        ("k=51", 400, "invalid_parameter"),
    ],
)
async def test_query_and_k_limits(
    service: SuggestService, query: str, status: int, code: str
) -> None:
    async with client_for(service) as client:
        params = {"q": "new", "k": query[2:]} if query.startswith("k=") else {"q": query}
        resp = await client.get("/v1/suggest", params=params)
        assert resp.status == status
        assert (await error_of(resp))["code"] == code


# --- the generate rate limit -------------------------------------------------------------------


async def test_generate_is_rate_limited_per_client(
    service: SuggestService,
    redis_server: RedisServer,
) -> None:
    async with client_for(
        service, generation=True, redis_url=redis_server.url, generate_rate_per_min=3,
        api_keys=("alice", "bob"),
    ) as client:
        for i in range(3):
            resp = await client.post("/v1/generate", json={"query": f"what is {i}"})
            assert resp.status == 202, await resp.text()
        resp = await client.post("/v1/generate", json={"query": "what is 4"})
        assert resp.status == 429
        assert (await error_of(resp))["code"] == "rate_limited"
        assert 1 <= int(resp.headers["Retry-After"]) <= 20
        # Another configured API key is another client, even from the same address.
        for key in ("alice", "bob"):
            resp = await client.post(
                "/v1/generate", json={"query": "what is 5"}, headers={"X-API-Key": key}
            )
            assert resp.status in (200, 202)
        # The limit is on /v1/generate only.
        assert (await client.get("/v1/suggest", params={"q": "new"})).status == 200


async def test_a_zero_rate_disables_the_limit(
    service: SuggestService,
    redis_server: RedisServer,
) -> None:
    async with client_for(
        service, generation=True, redis_url=redis_server.url, generate_rate_per_min=0
    ) as client:
        for _ in range(50):
            resp = await client.post("/v1/generate", json={"query": "same question"})
            assert resp.status in (200, 202)


async def test_json_with_a_charset_or_a_json_suffix_is_accepted(
    service: SuggestService,
    redis_server: RedisServer,
) -> None:
    async with client_for(service, generation=True, redis_url=redis_server.url) as client:
        for ctype in ("application/json; charset=utf-8", "application/vnd.api+json"):
            resp = await post_raw(client, b'{"query": "fine"}', ctype)
            assert resp.status == 202, await resp.text()
        resp = await post_raw(client, b'{"query": "fine"}', None)
        assert resp.status == 415


# --- CORS, security headers, admin -------------------------------------------------------------


async def test_cors_is_off_by_default(service: SuggestService) -> None:
    async with client_for(service) as client:
        resp = await client.get(
            "/v1/suggest", params={"q": "new"}, headers={"Origin": "https://evil.example"}
        )
        assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers
        pre = await client.options(
            "/v1/suggest",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert pre.status == 405 and "Access-Control-Allow-Origin" not in pre.headers


async def test_cors_allow_list(service: SuggestService) -> None:
    async with client_for(service, cors_origins=("https://app.example",)) as client:
        ok = await client.get(
            "/v1/suggest", params={"q": "new"}, headers={"Origin": "https://app.example"}
        )
        assert ok.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "Origin" in ok.headers.getall("Vary")
        other = await client.get(
            "/v1/suggest", params={"q": "new"}, headers={"Origin": "https://evil.example"}
        )
        assert "Access-Control-Allow-Origin" not in other.headers
        pre = await client.options(
            "/v1/generate",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert pre.status == 204
        assert "POST" in pre.headers["Access-Control-Allow-Methods"]
        assert "X-API-Key" in pre.headers["Access-Control-Allow-Headers"]
        # An error answer carries the CORS headers too, so a browser can read it.
        bad = await client.get("/v1/suggest", headers={"Origin": "https://app.example"})
        assert bad.status == 400
        assert bad.headers["Access-Control-Allow-Origin"] == "https://app.example"


async def test_security_headers(service: SuggestService) -> None:
    async with client_for(service) as client:
        api = await client.get("/v1/suggest", params={"q": "new"})
        assert api.headers["X-Content-Type-Options"] == "nosniff"
        error = await client.get("/nope")
        assert error.headers["X-Content-Type-Options"] == "nosniff"
        page = await client.get("/")
        assert page.status == 200 and page.content_type == "text/html"
        csp = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        html = await page.text()
        # No inline script: every <script> tag loads a file.
        for tag in html.split("<script")[1:]:
            assert "src=" in tag.split(">")[0] and tag.split(">", 1)[1].startswith("</script")


async def test_admin_routes_need_the_token(service: SuggestService, tmp_path: Path) -> None:
    async with client_for(service, admin_token="s3cret") as client:
        assert (await client.post("/admin/reload")).status == 401
        wrong = await client.post("/admin/reload", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 403 and (await error_of(wrong))["code"] == "forbidden"
    async with client_for(service) as client:  # no token configured: admin is off
        resp = await client.post("/admin/reload", headers={"Authorization": "Bearer x"})
        assert resp.status == 403
    # Compared in constant time (a timing test would be flaky; the source is the proof).
    assert "hmac.compare_digest" in inspect.getsource(reload.check_token)
