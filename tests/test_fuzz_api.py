"""Schema-driven fuzzing of the HTTP API from its own OpenAPI document (hypothesis).

Every operation in ``/openapi.json`` gets requests built from its schema: conforming values,
values that break the schema (wrong types, out of range, too long, bad encodings), bodies of
every shape and content type, plus unknown paths and methods. The API runs on a real port with
a real Redis. Checks: no 5xx ever; every 4xx is ``{"error": {"code", "message"}}``; a 2xx JSON
answer validates against the operation's response schema.

The default run sends ``FUZZ_REQUESTS`` requests (1,000); the full run is
``TYPEAHEAD_FUZZ_REQUESTS=10000 .venv/bin/pytest tests/test_fuzz_api.py``.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import redis as redis_sync
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.lexical_fixtures import build_small_index
from tests.redis_server import RedisServer, free_port
from typeahead.http.app import create_app
from typeahead.http.fastpath import KeystrokeSite
from typeahead.http.server import bind_socket
from typeahead.settings import Settings
from typeahead.suggest.service import SuggestService

FUZZ_REQUESTS = int(os.environ.get("TYPEAHEAD_FUZZ_REQUESTS", "1000"))
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
CODE = re.compile(r"^[a-z][a-z0-9_]*$")
TIMEOUT_S = 10.0


@dataclass
class Live:
    port: int
    spec: dict[str, Any]
    stats: Counter[str] = field(default_factory=Counter)
    conn: http.client.HTTPConnection | None = None

    def send(self, method: str, url: str, body: bytes | None, headers: dict[str, str]
             ) -> tuple[int, dict[str, str], bytes]:
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT_S)
            try:
                self.conn.request(method, url, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
            except (ConnectionError, http.client.RemoteDisconnected):
                self.close()  # the server closed a kept-alive connection: once more, fresh
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _serve(app: web.Application, port: int, ready: threading.Event,
           stop: threading.Event) -> None:
    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        # The production site: keystrokes meet the fast path first, as under typeahead serve.
        sock = bind_socket("127.0.0.1", port, reuse_port=False, backlog=128)
        await KeystrokeSite(runner, sock, backlog=128).start()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await runner.cleanup()

    asyncio.run(main())


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, redis_session: RedisServer
         ) -> Iterator[Live]:
    redis_session.start()
    client = redis_sync.Redis.from_url(redis_session.url)
    client.flushdb()
    client.close()
    tmp: Path = tmp_path_factory.mktemp("fuzzapi")
    service = SuggestService(index=build_small_index(tmp), results_k=0)
    # No worker: jobs only queue. A deep queue and no rate limit, so that every 503 or 429
    # would be a finding, not the configured back-pressure.
    settings = Settings.from_env(environ={}, redis_url=redis_session.url,
                                 queue_max_depth=1_000_000, generate_rate_per_min=0,
                                 generate_request_rate_per_min=0,
                                 admin_token="fuzz-admin-token-not-guessable")
    port = free_port()
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=_serve, args=(create_app(settings, service), port, ready,
                                                    stop), daemon=True)
    thread.start()
    assert ready.wait(30), "the API did not start"
    live = Live(port, {})
    status, _, body = live.send("GET", "/openapi.json", None, {})
    assert status == 200
    live.spec = orjson.loads(body)
    yield live
    live.close()
    stop.set()
    thread.join(30)
    print(f"\nfuzzed {sum(live.stats.values())} requests: {dict(sorted(live.stats.items()))}")


# --- strategies from the schema ---------------------------------------------------------------

ODD_TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
JUNK_BYTES = st.binary(max_size=64)
INT64 = st.integers(-(2**63), 2**63 - 1)  # what JSON encoders take


def string_values(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    if "enum" in schema:
        return st.sampled_from([str(v) for v in schema["enum"]])
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True)
    low, high = schema.get("minLength", 0), schema.get("maxLength", 60)
    return st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=low,
                   max_size=min(high, 60))


def valid_value(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    kind = schema.get("type")
    if kind == "integer":
        return st.integers(schema.get("minimum", -10), schema.get("maximum", 10_000))
    if kind == "object":
        props = {k: valid_value(v) for k, v in schema.get("properties", {}).items()}
        return st.fixed_dictionaries(props)
    return string_values(schema)


def invalid_value(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that break the schema, as text (a URL carries only text)."""
    long = schema.get("maxLength", 200) + 1
    return st.one_of(
        st.just(""), ODD_TEXT, st.just("x" * long), st.just("\x00"),
        st.integers(-10**20, 10**20).map(str), st.sampled_from(["1.5", "nan", "1e9", "-0", " 3"]),
    )


def encode(value: Any) -> str:
    return quote(str(value), safe="")


RAW_ESCAPES = st.sampled_from(["%", "%zz", "%ff", "%ed%a0%80", "%c0%af", "%00", "%e2%82"])


@st.composite
def query_string(draw: st.DrawFn, params: list[dict[str, Any]]) -> str:
    pairs: list[str] = []
    for p in params:
        if p["in"] != "query":
            continue
        choice = draw(st.sampled_from(["valid", "valid", "invalid", "omit", "twice"]))
        if choice == "omit":
            continue
        value = draw(valid_value(p["schema"]) if choice != "invalid"
                     else invalid_value(p["schema"]))
        pairs.append(f"{p['name']}={encode(value)}")
        if choice == "twice":
            pairs.append(f"{p['name']}={encode(draw(invalid_value(p['schema'])))}")
    if draw(st.booleans()):
        pairs.append(f"{encode(draw(ODD_TEXT))}={draw(RAW_ESCAPES)}")
    return "&".join(pairs)


@st.composite
def body_and_type(draw: st.DrawFn, schema: dict[str, Any] | None
                  ) -> tuple[bytes | None, str | None]:
    json_type = draw(st.sampled_from(["application/json", "application/json; charset=utf-8"]))
    kind = draw(st.sampled_from(["valid", "wrong_types", "any_json", "junk", "deep", "huge",
                                 "none", "other_type"]))
    if kind == "valid" and schema is not None:
        return orjson.dumps(draw(valid_value(schema))), json_type
    if kind == "wrong_types":
        value = draw(st.dictionaries(st.sampled_from(["query", "index", "q"]),
                                     st.one_of(st.none(), INT64, st.floats(),
                                               st.lists(INT64, max_size=5), ODD_TEXT)))
        return orjson.dumps(value), json_type
    if kind == "any_json":
        leaf: st.SearchStrategy[Any] = st.one_of(st.none(), st.booleans(),
                                                 st.integers(-10**6, 10**6), ODD_TEXT)
        anything = draw(st.recursive(leaf, lambda c: st.lists(c) | st.dictionaries(ODD_TEXT, c),
                                     max_leaves=10))
        return orjson.dumps(anything), json_type
    if kind == "deep":
        depth = draw(st.integers(10, 3000))
        return b'{"query": ' + b"[" * depth + b"1" + b"]" * depth + b"}", json_type
    if kind == "huge":
        return b'{"query": "' + b"a" * draw(st.integers(15_000, 70_000)) + b'"}', json_type
    if kind == "none":
        return None, draw(st.sampled_from([None, "application/json"]))
    ctype = draw(st.sampled_from(["text/plain", "application/x-www-form-urlencoded",
                                  "multipart/form-data", "application/xml", "*/*", "json"]))
    return draw(JUNK_BYTES), ctype if kind == "other_type" else json_type


def fill_path(draw: st.DrawFn, path: str, params: list[dict[str, Any]]) -> str:
    for p in params:
        if p["in"] != "path":
            continue
        if draw(st.integers(0, 3)):
            value = encode(draw(valid_value(p["schema"])))
        else:
            value = draw(st.one_of(ODD_TEXT.map(encode), RAW_ESCAPES,
                                   st.just("..%2F..%2Fetc%2Fpasswd")))
        path = path.replace("{" + p["name"] + "}", value or "x")
    return path


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    body: bytes | None
    headers: dict[str, str]
    operation: dict[str, Any] | None


@st.composite
def requests(draw: st.DrawFn, spec: dict[str, Any]) -> Request:
    ops = [(p, m, o) for p, item in spec["paths"].items() for m, o in item.items()]
    path, method, op = draw(st.sampled_from(ops))
    params = op.get("parameters", [])
    schema = (op.get("requestBody") or {}).get("content", {}).get("application/json", {})
    url = fill_path(draw, path, params)
    query = draw(query_string(params))
    if draw(st.integers(0, 9)) == 0:  # a method or a path the schema does not have
        method = draw(st.sampled_from(METHODS)).lower()
        if draw(st.booleans()):
            url = "/" + encode(draw(ODD_TEXT)) + draw(st.sampled_from(["", "/v1", "/..", "//"]))
        op = None
    body, ctype = draw(body_and_type(schema.get("schema")))
    if method.upper() in ("GET", "HEAD") and draw(st.integers(0, 4)):
        body, ctype = None, None
    headers = {} if ctype is None else {"Content-Type": ctype}
    if draw(st.booleans()):
        headers["X-Request-ID"] = draw(st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                               max_size=80))
    if draw(st.integers(0, 4)) == 0:
        headers["Authorization"] = "Bearer " + draw(st.text(st.characters(
            min_codepoint=33, max_codepoint=126), max_size=20))
    return Request(method.upper(), url + ("?" + query if query else ""), body, headers, op)


# --- checks -----------------------------------------------------------------------------------


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = spec["components"]["schemas"][name]
    return schema


def check_answer(live: Live, req: Request, status: int, headers: dict[str, str],
                 body: bytes) -> None:
    live.stats[str(status)] += 1
    assert status < 500, (req, status, body[:300])
    if req.method == "HEAD":
        return
    if 400 <= status < 500:
        assert headers.get("content-type", "").startswith("application/json"), (req, headers)
        error = orjson.loads(body)["error"]
        assert CODE.match(error["code"]) and error["message"], (req, body)
        return
    if req.operation is None or not 200 <= status < 300:
        return
    content = req.operation["responses"].get(str(status), {}).get("content", {})
    if "application/json" in content:
        schema = resolve(live.spec, content["application/json"]["schema"])
        value = orjson.loads(body)
        missing = set(schema.get("required", [])) - set(value)
        assert not missing, (req, missing)


@settings(max_examples=FUZZ_REQUESTS, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_the_api_from_its_openapi_document(live: Live, data: st.DataObject) -> None:
    req = data.draw(requests(live.spec))
    status, headers, body = live.send(req.method, req.url, req.body, req.headers)
    check_answer(live, req, status, headers, body)
