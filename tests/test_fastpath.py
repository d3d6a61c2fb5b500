"""The keystroke fast path: what it takes, what it hands to aiohttp, and that a client cannot
tell the two apart (same bodies and headers, pipelining, keep-alive, close, shutdown)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestServer

from tests.fastpath_server import FastPathTestServer, PlainTestServer
from tests.lexical_fixtures import build_small_index
from typeahead import metrics
from typeahead.http.app import create_app
from typeahead.http.fastpath import KeystrokeProtocol, parse_head
from typeahead.settings import Settings
from typeahead.suggest.service import SuggestService

GET = "GET {} HTTP/1.1\r\nHost: t\r\n{}\r\n"
Response = tuple[bytes, dict[str, str], bytes]  # status line, headers by lower-case name, body


def get(target: str, headers: str = "") -> bytes:
    return GET.format(target, headers).encode()


# --- which requests the fast path takes -------------------------------------------------------


@pytest.mark.parametrize("head", [
    b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t",
    b"GET /v1/suggest?q=new&k=3 HTTP/1.1\r\nhost: t\r\nConnection: keep-alive",
    b"GET /v1/suggest HTTP/1.1\r\nHost: t\r\nAccept: */*\r\nUser-Agent: x",
    b"GET /v1/suggest?q=a HTTP/1.1\r\nHost: t\r\nContent-Length-Extra: 1",
    b"GET /v1/suggest?q=a HTTP/1.1\r\nHost: t\r\nX:\t tab\t",
])
def test_plain_keystrokes_are_taken(head: bytes) -> None:
    assert parse_head(head) is not None


@pytest.mark.parametrize("head", [
    b"POST /v1/suggest?q=new HTTP/1.1",
    b"HEAD /v1/suggest?q=new HTTP/1.1",
    b"GET /v1/suggest?q=new HTTP/1.0",
    b"GET /v1/suggestions?q=new HTTP/1.1",
    b"GET /v1//suggest?q=new HTTP/1.1",
    b"GET /healthz HTTP/1.1",
    b"GET /v1/suggest?q=new#frag HTTP/1.1",
    b"GET /v1/suggest?q=caf\xc3\xa9 HTTP/1.1",
    b"GET  /v1/suggest?q=new HTTP/1.1",
    b"GET /v1/suggest?q=new HTTP/1.1\r\nContent-Length: 0",
    b"GET /v1/suggest?q=new HTTP/1.1\r\nTransfer-Encoding: chunked",
    b"GET /v1/suggest?q=new HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket",
    b"GET /v1/suggest?q=new HTTP/1.1\r\nExpect: 100-continue",
    b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\r\n folded",
    b"GET /v1/suggest?q=new HTTP/1.1\r\nno colon here",
    b"GET /v1/suggest?q=new HTTP/1.1\r\nBad Name: x",
    b"\x16\x03\x01\x02\x00",
    # aiohttp refuses these, or reads them differently: the fast path must not answer them
    b"GET /v1/suggest?q=new HTTP/1.1",  # no Host
    b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\nContent-Length: 40",  # bare LF
    b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\nTransfer-Encoding: chunked",
    b"GET /v1/suggest?q=new HTTP/1.1\nHost: t",
    b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\rX: y",  # bare CR
    b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\r\nX: a\x00b",  # NUL in a value
    b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\r\nX: a\x01b",
    b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\r\nX: a\x7fb",
    b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\r\nX: caf\xc3\xa9",
    b"GET /v1/suggest?q=n\x01ew HTTP/1.1\r\nHost: t",  # control byte in the target
    b"GET /v1/suggest?q=n\tew HTTP/1.1\r\nHost: t",
    b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t" + b"\r\nX-A: b" * 200,  # many headers
    b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\nConnection: close",
    b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\r\nHost: u",
    b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\r\nX-Request-ID: a\r\nX-Request-ID: b",
    b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\r\nConnection: closed",
    b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\r\nConnection: te, close",
    b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: t\r\nSec-WebSocket-Key1: x",
])
def test_everything_else_is_handed_over(head: bytes) -> None:
    assert parse_head(head) is None


def test_headers_it_obeys() -> None:
    k = parse_head(b"GET /v1/suggest?q=a HTTP/1.1\r\nHost: t\r\nX-Request-ID:  abc \t\r\n"
                   b"ORIGIN: https://a.example\r\nConnection: keep-alive, Close")
    assert k is not None
    assert (k.query, k.request_id, k.origin, k.close) == ("q=a", "abc", "https://a.example", True)


# --- the same answers as aiohttp --------------------------------------------------------------


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[tuple[FastPathTestServer, TestServer]]:
    """One app served twice: with the fast path and through aiohttp alone."""
    index = build_small_index(tmp_path)
    settings = Settings(generation=False, cors_origins=("https://a.example",))
    fast = FastPathTestServer(create_app(settings, SuggestService(index=index)))
    slow = PlainTestServer(create_app(settings, SuggestService(index=index)))
    await fast.start_server()
    await slow.start_server()
    yield fast, slow
    await fast.close()
    await slow.close()


async def exchange(server: TestServer, payload: bytes, count: int) -> list[Response]:
    """Send ``payload`` on one connection and read ``count`` responses."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(payload)
    await writer.drain()
    out = [await read_response(reader) for _ in range(count)]
    writer.close()
    return out


async def read_response(reader: asyncio.StreamReader) -> Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status, *lines = head.decode("latin-1").split("\r\n")[:-2]
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status.encode(), headers, body


def comparable(response: Response) -> Response:
    status, headers, body = response
    headers = {k: ("*" if k in ("date", "x-request-id") else v) for k, v in headers.items()}
    if headers.get("content-type") == "application/json" and b"took_us" in body:
        data = orjson.loads(body)
        data["took_us"] = 0
        body = orjson.dumps(data)
        headers.pop("content-length")
    return status, headers, body


@pytest.mark.parametrize(("target", "headers"), [
    ("/v1/suggest?q=new%20y&k=2", ""),
    ("/v1/suggest?q=york+new", ""),
    ("/v1/suggest?q=caf%C3%A9", "Origin: https://a.example\r\n"),
    ("/v1/suggest?q=amazn", "Origin: https://elsewhere.example\r\n"),
    ("/v1/suggest?q=new&q=ignored&k=1", "X-Request-ID: my-id-1\r\n"),
    ("/v1/suggest?q=new", "Connection: close\r\n"),
    ("/v1/suggest?q=", ""),
    ("/v1/suggest?q=a&k=99", ""),
    ("/v1/suggest?q=%ff", ""),
    ("/v1/suggest", ""),
])
async def test_fast_and_aiohttp_answers_agree(
        servers: tuple[FastPathTestServer, TestServer], target: str, headers: str) -> None:
    fast, slow = servers
    [a] = await exchange(fast, get(target, headers), 1)
    [b] = await exchange(slow, get(target, headers), 1)
    assert comparable(a) == comparable(b)
    if "X-Request-ID" in headers:
        assert a[1]["x-request-id"] == "my-id-1"
    assert re.fullmatch(r"[ -~]{1,64}", a[1]["x-request-id"])


async def test_pipelined_requests_answer_in_order_across_a_hand_over(
        servers: tuple[FastPathTestServer, TestServer]) -> None:
    fast, _ = servers
    payload = (get("/v1/suggest?q=new&k=1") + get("/v1/suggest?q=caf&k=1") + get("/healthz")
               + get("/v1/suggest?q=") + get("/v1/suggest?q=york&k=1"))
    replies = await exchange(fast, payload, 5)
    assert [r[0] for r in replies] == [b"HTTP/1.1 200 OK"] * 3 + [b"HTTP/1.1 400 Bad Request",
                                                                    b"HTTP/1.1 200 OK"]
    texts = [orjson.loads(r[2]).get("query") for r in replies]
    assert texts == ["new", "caf", None, None, "york"]
    assert orjson.loads(replies[3][2])["error"]["code"] == "missing_parameter"


async def test_a_long_pipelined_burst_is_answered_whole_and_in_order(
        servers: tuple[FastPathTestServer, TestServer]) -> None:
    fast, _ = servers
    words = ["new", "york", "caf", "amazn", "times"] * 100
    replies = await exchange(fast, b"".join(get(f"/v1/suggest?q={w}&k=1") for w in words),
                             len(words))
    assert [orjson.loads(r[2])["query"] for r in replies] == words


async def test_a_head_split_across_reads_is_still_answered(
        servers: tuple[FastPathTestServer, TestServer]) -> None:
    fast, _ = servers
    reader, writer = await asyncio.open_connection(fast.host, fast.port)
    request = get("/v1/suggest?q=new&k=1")
    writer.write(request[:20])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(request[20:] + get("/v1/suggest?q=york&k=1"))
    replies = [await read_response(reader) for _ in range(2)]
    writer.close()
    assert [orjson.loads(r[2])["query"] for r in replies] == ["new", "york"]


async def test_connection_close_is_honoured(servers: tuple[FastPathTestServer, TestServer]) -> None:
    fast, _ = servers
    reader, writer = await asyncio.open_connection(fast.host, fast.port)
    writer.write(get("/v1/suggest?q=new", "Connection: close\r\n"))
    status, headers, _ = await read_response(reader)
    assert status == b"HTTP/1.1 200 OK" and headers["connection"] == "close"
    writer.write(get("/v1/suggest?q=x"))
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed; the second is not answered
    writer.close()


async def test_bytes_after_a_close_request_are_aiohttps_to_judge(
        servers: tuple[FastPathTestServer, TestServer]) -> None:
    """aiohttp refuses a pipelined request after ``Connection: close`` (400, nothing else
    answered); the fast path must not answer the first one in its place."""
    fast, slow = servers
    payload = get("/v1/suggest?q=new", "Connection: close\r\n") + get("/v1/suggest?q=x")
    [a] = await exchange(fast, payload, 1)
    [b] = await exchange(slow, payload, 1)
    assert a[0] == b[0] == b"HTTP/1.0 400 Bad Request"


async def test_fast_path_requests_are_counted_in_metrics(
        servers: tuple[FastPathTestServer, TestServer]) -> None:
    fast, _ = servers
    child = metrics.get().requests.labels("/v1/suggest", "GET", "200")
    before = child._value.get()
    await exchange(fast, get("/v1/suggest?q=new") * 3, 3)
    assert child._value.get() - before == 3
    assert not fast.site.connections or all(c._inner is None for c in fast.site.connections)


async def test_shutdown_closes_idle_keystroke_connections(tmp_path: Path) -> None:
    app = create_app(Settings(generation=False), SuggestService(index=build_small_index(tmp_path)))
    server = FastPathTestServer(app)
    await server.start_server()
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(get("/v1/suggest?q=new"))
    await read_response(reader)
    assert len(server.site.connections) == 1
    await server.close()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_idle_connections_time_out(tmp_path: Path) -> None:
    settings = Settings(generation=False, keepalive_timeout_s=0.2)
    service = SuggestService(index=build_small_index(tmp_path))
    fast = FastPathTestServer(create_app(settings, service))
    await fast.start_server()
    reader, writer = await asyncio.open_connection(fast.host, fast.port)
    writer.write(get("/v1/suggest?q=new"))
    await read_response(reader)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await fast.close()


# --- flow control -----------------------------------------------------------------------------


class RecordingTransport:
    """Just enough of a transport to watch the protocol's writes and reads being paused."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.reading = True
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


async def test_a_client_that_stops_reading_stops_being_answered(
        servers: tuple[FastPathTestServer, TestServer]) -> None:
    fast, _ = servers
    protocol = KeystrokeProtocol(fast.site)
    transport = RecordingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(get("/v1/suggest?q=new"))
    assert len(transport.written) == 1
    protocol.pause_writing()
    protocol.data_received(get("/v1/suggest?q=york") * 2)
    assert len(transport.written) == 1 and not transport.reading
    protocol.resume_writing()
    assert len(transport.written) == 3 and transport.reading
    protocol.connection_lost(None)
    assert protocol not in fast.site.connections
