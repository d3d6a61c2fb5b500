"""The lean HTTP/1.1 client and the scheduler's timers, against raw asyncio servers in the test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import aiohttp
import pytest

from loadtest.client import Client, Target
from loadtest.http1 import HttpFailure, Origin, Pool, Pools, _Connection, split_url
from loadtest.stats import Stats
from loadtest.timer import SleepWaker, TimerFdWaker, make_waker

CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
LENGTH = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


class RawServer:
    """Answers each request by its path with canned bytes; counts connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = _content_length(head)
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                path = head.split(b" ")[1]
                served += 1
                if not await self._answer(path, served, body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # a test server handler: cancellation at shutdown simply ends it
        finally:
            writer.close()

    async def _answer(
        self, path: bytes, served: int, body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        """Writes the answer; False closes the connection."""
        if path == b"/length":
            writer.write(LENGTH)
        elif path == b"/chunked":
            for i in range(0, len(CHUNKED), 7):  # in pieces: the parser must resume
                writer.write(CHUNKED[i : i + 7])
                await writer.drain()
                await asyncio.sleep(0.001)
        elif path == b"/close":
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
            return False
        elif path == b"/until-eof":
            writer.write(b"HTTP/1.1 200 OK\r\n\r\nto the end")
            return False
        elif path == b"/once":  # answers the first request of a connection, drops the next
            if served > 1:
                return False
            writer.write(LENGTH)
        elif path == b"/echo":
            writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
        elif path == b"/drop":
            return False
        elif path == b"/garbage":
            writer.write(b"SMTP ready\r\n\r\n")
        elif path == b"/hang":
            await asyncio.sleep(30)
        else:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        return True


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            return int(value)
    return 0


@pytest.fixture
async def raw() -> AsyncIterator[RawServer]:
    server = RawServer()
    await server.start()
    yield server
    await server.stop()


def _pool(server: RawServer) -> Pool:
    return Pool(Origin("127.0.0.1", server.port, f"127.0.0.1:{server.port}"))


async def _get(pool: Pool, path: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    response = await pool.request(pool.build("GET", path), timeout_s)
    return response.status, response.body


async def test_content_length_and_chunked_bodies(raw: RawServer) -> None:
    pool = _pool(raw)
    assert await _get(pool, "/length") == (200, b"hello")
    assert await _get(pool, "/chunked") == (200, b"hello world")
    assert await _get(pool, "/missing") == (404, b"")
    assert await _get(pool, "/length") == (200, b"hello")
    assert raw.connections == 1 == pool.opened  # all four on one keep-alive connection
    pool.close()


async def test_keep_alive_reuse_and_concurrency(raw: RawServer) -> None:
    pool = _pool(raw)
    results = await asyncio.gather(*(_get(pool, "/length") for _ in range(6)))
    assert results == [(200, b"hello")] * 6
    assert pool.opened == 6  # no pipelining: one connection per concurrent request
    for _ in range(10):
        await _get(pool, "/length")
    assert pool.opened == 6 == raw.connections  # then reused, never reopened
    pool.close()


async def test_server_closing_the_connection(raw: RawServer) -> None:
    pool = _pool(raw)
    assert await _get(pool, "/close") == (200, b"ok")  # Connection: close is honoured
    assert await _get(pool, "/until-eof") == (200, b"to the end")  # body ends at close
    assert await _get(pool, "/length") == (200, b"hello")
    assert raw.connections == 3
    # A keep-alive connection the server drops as it is reused: sent again, once, on a new
    # one (connection 3 is dropped, 4 answers; then 4 is dropped and 5 answers).
    assert await _get(pool, "/once") == (200, b"hello")
    assert await _get(pool, "/once") == (200, b"hello")
    assert raw.connections == 5
    with pytest.raises(HttpFailure) as failed:
        await _get(pool, "/drop")  # a fresh connection that closes unanswered
    assert failed.value.kind == "disconnected"
    pool.close()


async def test_timeouts_and_bad_responses(raw: RawServer) -> None:
    pool = _pool(raw)
    started = time.perf_counter()
    with pytest.raises(TimeoutError):
        await _get(pool, "/hang", timeout_s=0.2)
    assert 0.2 <= time.perf_counter() - started < 2
    with pytest.raises(HttpFailure) as failed:
        await _get(pool, "/garbage")
    assert failed.value.kind == "bad_response"
    assert await _get(pool, "/length") == (200, b"hello")  # failed connections were dropped
    dead = Pool(Origin("127.0.0.1", 9, "127.0.0.1:9"))  # discard port: nothing listens
    with pytest.raises(HttpFailure) as failed:
        await _get(dead, "/")
    assert failed.value.kind == "connect"
    pool.close()


async def test_post_body_and_request_bytes(raw: RawServer) -> None:
    pool = _pool(raw)
    request = pool.build("POST", "/echo", b'{"query": "x"}')
    response = await pool.request(request, 5.0)
    assert (response.status, response.body) == (202, b'{"query": "x"}')
    head = raw.requests[-1]
    assert head.startswith(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Type: application/json\r\nContent-Length: 14\r\n" in head
    assert pool.build("GET", "/s?q=caf\u00e9 x").startswith(b"GET /s?q=caf%C3%A9%20x HTTP/1.1")
    pool.close()


class _FakeTransport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


def _fed(response: bytes, step: int) -> tuple[_Connection, asyncio.Future[Any]]:
    conn = _Connection(asyncio.get_running_loop())
    conn.connection_made(cast(Any, _FakeTransport()))
    waiter = conn.start(b"GET / HTTP/1.1\r\n\r\n")
    for i in range(0, len(response), step):
        conn.data_received(response[i : i + step])
    return conn, waiter


@pytest.mark.parametrize("step", [1, 3, 1000])
async def test_parser_resumes_at_any_split(step: int) -> None:
    for raw_response, body in ((CHUNKED, b"hello world"), (LENGTH, b"hello"),
                               (b"HTTP/1.1 100 Continue\r\n\r\n" + LENGTH, b"hello"),
                               (b"HTTP/1.1 204 No Content\r\n\r\n", b"")):
        conn, waiter = _fed(raw_response, step)
        assert waiter.done() and waiter.result().body == body
        assert conn.reusable


async def test_parser_rejects_malformed_framing() -> None:
    _, waiter = _fed(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 1000)
    assert isinstance(waiter.exception(), HttpFailure)
    _, waiter = _fed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 1000)
    exc = waiter.exception()
    assert isinstance(exc, HttpFailure) and exc.kind == "bad_payload"
    conn, waiter = _fed(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", 1000)
    assert waiter.result().body == b"x" and not conn.reusable  # HTTP/1.0: no keep-alive


def test_split_url() -> None:
    assert split_url("http://h:81/a?b=1") == (Origin("h", 81, "h:81"), "/a?b=1")
    assert split_url("http://h") == (Origin("h", 80, "h"), "/")
    assert split_url("https://h/") is None


async def test_client_records_error_kinds(raw: RawServer) -> None:
    base = f"http://127.0.0.1:{raw.port}/"
    stats = Stats()
    async with aiohttp.ClientSession() as session:
        client = Client(session, Target(base), stats, time.perf_counter(), pools=Pools(),
                        timeout_s=0.2)
        for path in ("/length", "/hang", "/drop", "/garbage", "/missing"):
            client.in_flight += 1
            await client.send(time.perf_counter(), "plain", path)
        assert client.pools is not None
        client.pools.close()
    assert stats.latency["plain"].get_total_count() == 1
    assert dict(stats.errors) == {("plain", "timeout"): 1, ("plain", "disconnected"): 1,
                                  ("plain", "bad_response"): 1, ("plain", "http_404"): 1}
    assert client.in_flight == 0


@pytest.mark.parametrize("factory", [
    lambda loop: TimerFdWaker(loop), lambda loop: SleepWaker(0), lambda loop: SleepWaker(200),
])
async def test_wakers_are_never_early(factory: Callable[[Any], Any]) -> None:
    waker = factory(asyncio.get_running_loop())
    try:
        lates = []
        for i in range(40):
            due = time.perf_counter() + 0.0003 * (i % 7)
            await waker.wait_until(due)
            lates.append(time.perf_counter() - due)
        assert min(lates) >= 0
        assert sorted(lates)[len(lates) // 2] < 0.05  # loose: the machine is shared
    finally:
        waker.close()


async def test_make_waker_picks_timerfd_on_linux() -> None:
    waker = make_waker("auto", asyncio.get_running_loop())
    assert isinstance(waker, TimerFdWaker)
    waker.close()
    assert isinstance(make_waker("sleep", asyncio.get_running_loop()), SleepWaker)
