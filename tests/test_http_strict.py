"""The HTTP edge on a real port, on both request paths (the keystroke fast path and aiohttp):
smuggling attempts are refused as aiohttp refuses them, parser-level errors carry the JSON
shape and the standard headers and echo nothing, and half-sent heads and idle connections are
closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp.http_exceptions import BadHttpMessage

from tests.fastpath_server import FastPathTestServer, PlainTestServer
from tests.lexical_fixtures import build_small_index
from typeahead.http.app import create_app
from typeahead.http.connection import parser_error
from typeahead.http.limits import SECURITY_HEADERS
from typeahead.settings import Settings
from typeahead.suggest.service import SuggestService

SECRET = "privatequery"
Reply = tuple[bytes, dict[str, str], bytes]


@pytest.fixture(params=["fast", "plain"])
async def server(request: pytest.FixtureRequest, tmp_path: Path
                 ) -> AsyncIterator[FastPathTestServer]:
    settings = Settings(generation=False, head_timeout_s=0.5, keepalive_timeout_s=1.0)
    app = create_app(settings, SuggestService(index=build_small_index(tmp_path)))
    kind = FastPathTestServer if request.param == "fast" else PlainTestServer
    srv = kind(app)
    await srv.start_server()
    yield srv
    await srv.close()


async def send(server: FastPathTestServer, payload: bytes) -> list[Reply]:
    """Send ``payload`` on a new connection; every response until the server closes it."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(payload)
    await writer.drain()
    replies = []
    try:
        while head := await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5):
            status, *lines = head.decode("latin-1").split("\r\n")[:-2]
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            replies.append((status.encode(), headers, body))
    except asyncio.IncompleteReadError as eof:
        assert eof.partial == b""
    finally:
        writer.close()
    return replies


def assert_json_error(reply: Reply, status: int) -> dict[str, str]:
    line, headers, body = reply
    assert line.split(b" ")[1] == str(status).encode()
    assert line.startswith(b"HTTP/1.")
    assert headers["content-type"].startswith("application/json")
    assert len(headers["x-request-id"]) == 32
    for name, value in SECURITY_HEADERS.items():
        assert headers[name.lower()] == value
    assert headers.get("connection", "close") == "close"  # (HTTP/1.0 closes by default)
    error: dict[str, str] = orjson.loads(body)["error"]
    assert set(error) == {"code", "message"} and error["message"]
    assert SECRET not in body.decode("utf-8", "replace")
    return error


# --- request smuggling: what aiohttp refuses is never answered 200 --------------------------

HIDDEN = b"POST /v1/generate HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"
SMUGGLING = {
    "bare LF hides Content-Length":
        b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\nContent-Length: %d\r\n\r\n" % len(HIDDEN)
        + HIDDEN,
    "bare LF hides Transfer-Encoding":
        b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n" + HIDDEN,
    "bare CR": b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\rContent-Length: 3\r\n\r\nabc",
    "NUL in a value": b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
    "control byte in a value": b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\r\nX-A: a\x1fb\r\n\r\n",
    "control byte in the target": b"GET /v1/suggest?q=n\x01w HTTP/1.1\r\nHost: t\r\n\r\n",
    "129 headers": b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\r\n"
                   + b"".join(b"X-%d: a\r\n" % i for i in range(129)) + b"\r\n",
    "two Hosts": b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n",
    "no Host": b"GET /v1/suggest?q=new HTTP/1.1\r\n\r\n",
}


@pytest.mark.parametrize("name", SMUGGLING)
async def test_what_aiohttp_refuses_is_refused_on_both_paths(
        server: FastPathTestServer, name: str) -> None:
    replies = await send(server, SMUGGLING[name])
    assert len(replies) == 1, [r[0] for r in replies]  # nothing hidden ran as a second request
    assert_json_error(replies[0], 400)


async def test_duplicate_connection_headers_are_read_as_aiohttp_reads_them(
        server: FastPathTestServer) -> None:
    """Any ``close`` among repeated Connection headers closes (the first no longer wins)."""
    replies = await send(server, b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\r\n"
                                 b"Connection: keep-alive\r\nConnection: close\r\n\r\n")
    assert [r[0] for r in replies] == [b"HTTP/1.1 200 OK"]
    assert replies[0][1]["connection"] == "close"


# --- parser-level errors: one renderer ---------------------------------------------------------


@pytest.mark.parametrize(("payload", "status", "code"), [
    (f"GET /v1/suggest?q={SECRET}é HTTP/1.1\r\nHost: t\r\n\r\n".encode(), 400, "bad_target"),
    (f"GET /v1/suggest?q={SECRET} HTTP/1.2\r\nHost: t\r\n\r\n".encode(), 400,
     "bad_request_line"),
    (f"GET /v1/suggest?q={SECRET} HTTP/2.0\r\nHost: t\r\n\r\n".encode(), 505,
     "http_version_not_supported"),
    (f"GET /v1/suggest?q={SECRET} HTTP/0.9\r\nHost: t\r\n\r\n".encode(), 505,
     "http_version_not_supported"),
    (f"G@T /v1/suggest?q={SECRET} HTTP/1.1\r\nHost: t\r\n\r\n".encode(), 400, "bad_method"),
    (f"GET /v1/suggest?q=a HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {SECRET}\x00\r\n\r\n"
     .encode(), 400, "malformed_request"),
    (b"POST /v1/suggest HTTP/1.1\r\nHost: t\r\nContent-Encoding: deflate\r\n"
     b"Content-Length: 2\r\n\r\n{}", 400, "bad_content_encoding"),
    (b"GET /v1/suggest HTTP/1.1\r\nHost: t\r\n" + b"X: " + b"a" * 9000 + b"\r\n\r\n", 400,
     "line_too_long"),
])
async def test_parser_errors_are_json_with_the_standard_headers(
        server: FastPathTestServer, payload: bytes, status: int, code: str) -> None:
    replies = await send(server, payload)
    assert len(replies) == 1
    assert assert_json_error(replies[0], status)["code"] == code


async def test_a_parser_error_after_answered_keystrokes(server: FastPathTestServer) -> None:
    replies = await send(server, b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\r\n\r\n"
                                 b"GET /v1/suggest?q=x HTTP/2.0\r\nHost: t\r\n\r\n")
    assert [r[0].split(b" ")[1] for r in replies] == [b"200", b"505"]


# --- head and idle timeouts --------------------------------------------------------------------


async def test_a_trickled_head_is_cut_off(server: FastPathTestServer) -> None:
    """A slowloris client, one byte every 50 ms, never finishing its head: closed after the
    head timeout (0.5 s here) although it never stops sending."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    head = b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 1000
    closed = asyncio.create_task(reader.read())
    sent = 0
    try:
        while not closed.done() and sent < len(head):
            writer.write(head[sent:sent + 1])
            sent += 1
            await asyncio.sleep(0.05)
    except ConnectionError:
        pass
    assert await asyncio.wait_for(closed, 5) == b""
    assert sent < len(head)  # cut off long before the client gave up
    writer.close()


async def test_a_trickled_head_after_a_keystroke_is_cut_off(server: FastPathTestServer) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\r\n\r\nGET /v1/sugg")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    rest = await asyncio.wait_for(reader.read(), 5)  # the body, then the close
    assert rest.endswith(b"}")
    writer.close()


async def test_a_trickled_body_gets_408_and_the_connection_closes(
        server: FastPathTestServer) -> None:
    """The head arrives whole; the body, one byte every 50 ms, never finishes: 408 after the
    timeout (0.5 s here), then the connection closes."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    body = b'{"index": "' + b"a" * 200 + b'"}'
    writer.write(b"POST /admin/reload HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body))
    answer = asyncio.create_task(reader.read())
    started = time.monotonic()
    try:
        for byte in body:
            if answer.done():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)
    except ConnectionError:
        pass
    reply = await asyncio.wait_for(answer, 5)
    assert reply.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in reply, reply[:200]
    assert time.monotonic() - started < 5
    writer.close()


async def test_idle_keep_alive_connections_are_closed(server: FastPathTestServer) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    rest = await asyncio.wait_for(reader.read(), 5)  # closed after 1 s idle
    assert rest.endswith(b"}")
    writer.close()


async def test_a_connection_that_sends_nothing_is_closed(server: FastPathTestServer) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


def test_timeouts_are_settings() -> None:
    settings = Settings.from_env({"TYPEAHEAD_HEAD_TIMEOUT_S": "2.5",
                                  "TYPEAHEAD_KEEPALIVE_TIMEOUT_S": "30"})
    assert (settings.head_timeout_s, settings.keepalive_timeout_s) == (2.5, 30.0)
    assert (Settings().head_timeout_s, Settings().keepalive_timeout_s) == (10.0, 75.0)


@pytest.mark.parametrize(("text", "message"), [
    ("Missing 'Host' header in request.", "Missing 'Host' header in request."),
    ("Data after `Connection: close`:\n\n  b'GET /v1/suggest?q=privatequery HTTP/1.1'\n  ^",
     "Data after `Connection: close`"),
    ("Invalid header value char:\n\n  b'Authorization: Bearer privatequery\\x00'\n  ^",
     "Invalid header value char"),
    ("privatequery\x00", "the request is not valid HTTP/1.1"),
    ("b'GET /v1/suggest?q=privatequery HTTP/1.1'", "the request is not valid HTTP/1.1"),
])
def test_parser_error_messages_keep_the_reason_and_drop_the_bytes(text: str,
                                                                   message: str) -> None:
    error = parser_error(400, BadHttpMessage(text))
    assert (error.status, error.code, error.message) == (400, "malformed_request", message)
