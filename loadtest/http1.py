"""A lean HTTP/1.1 client for the load tester's simple requests (GET, small POST bodies).

aiohttp's client spends about 250 µs of CPU per request (request/response objects, header
multidicts, URL handling, its connector's bookkeeping). On a machine that shares its cores
with the server under test that CPU is taken from the server and, worse, delays the
generator's schedule. This client does only what a load tester needs, directly on an
:class:`asyncio.Protocol`:

- one keep-alive connection pool per origin and process (idle connections reused first-in
  first-out; a new connection is opened whenever none is idle, so the open model is never
  throttled by the pool), no pipelining: one request per connection at a time;
- responses framed by ``Content-Length``, ``Transfer-Encoding: chunked`` or connection close;
  ``Connection: close`` and HTTP/1.0 answers are honoured;
- failures raised as :class:`HttpFailure` with the load tester's error kinds (``connect``,
  ``disconnected``, ``bad_response``, ``bad_payload``) and ``TimeoutError`` for timeouts.

SSE streams and HTTPS stay on aiohttp (``loadtest.client``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote, urlsplit

# A response head larger than this is not an answer from the service under test.
_MAX_HEAD = 64 * 1024
# ``--client``: this module, or aiohttp for everything.
CLIENTS: tuple[str, ...] = ("lean", "aiohttp")
_USER_AGENT = b"typeahead-loadtest"
# Characters a request target may carry as they are; anything else (spaces, non-ASCII) is
# percent-encoded, as a browser would.
_SAFE = "/?#[]@!$&'()*+,;=:%-._~"


class HttpFailure(Exception):
    """A request failed; ``kind`` is the error kind the load tester counts it under."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Origin:
    host: str
    port: int
    netloc: str  # the Host header


def split_url(url: str) -> tuple[Origin, str] | None:
    """``(origin, path with query)`` of an ``http://`` URL; None for anything else (https)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Origin(parts.hostname, parts.port or 80, parts.netloc), path


class _Connection(asyncio.Protocol):
    """One TCP connection and the parser of the response currently awaited on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self.waiter: asyncio.Future[Response] | None = None
        self.received = 0  # bytes of the current response; 0 means the server sent nothing
        self._buf = bytearray()
        self._status = 0
        self._length = -1  # body length; -1: read until close; -2: chunked
        self._chunks: list[bytes] = []
        self._in_head = True

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self.reusable = False  # bytes nobody asked for: the connection is out of step
            self.close()
            return
        self.received += len(data)
        self._buf += data
        try:
            self._parse()
        except HttpFailure as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        self.reusable = False
        if self.waiter is not None and not self.waiter.done() and not self._in_head \
                and self._length == -1:
            self._finish(bytes(self._buf))  # a body delimited by the connection's close
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self.waiter is not None and not self.waiter.done():
            if not self._in_head and self._length == -1:
                self._finish(bytes(self._buf))
            else:
                self.waiter.set_exception(HttpFailure("disconnected", str(exc or "")))

    # --- requests -------------------------------------------------------------------------

    def start(self, request: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None
        self.waiter = self.loop.create_future()
        self.received = 0
        self._buf.clear()
        self._in_head = True
        self.transport.write(request)
        return self.waiter

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    # --- parsing --------------------------------------------------------------------------

    def _parse(self) -> None:
        if self._in_head and not self._parse_head():
            return
        if self._length >= 0:
            if len(self._buf) >= self._length:
                if len(self._buf) > self._length:
                    self.reusable = False  # more than the body: never reuse such a stream
                self._finish(bytes(self._buf[: self._length]))
        elif self._length == -2:
            self._parse_chunks()

    def _parse_head(self) -> bool:
        """Parses the status line and headers once they are complete; False until then."""
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > _MAX_HEAD:
                    raise HttpFailure("bad_response", "response head too large")
                return False
            head = bytes(self._buf[:end])
            del self._buf[: end + 4]
            if not self._read_head(head):
                return True
            # 1xx interim answer (e.g. 100 Continue): the real one follows.

    def _read_head(self, head: bytes) -> bool:
        """Sets status and framing from one head; True if it was an interim (1xx) answer."""
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or not code.isdigit():
            raise HttpFailure("bad_response", f"bad status line {lines[0][:80]!r}")
        self._status = int(code)
        if self._status < 200:
            return True
        self._in_head = False
        if version == b"HTTP/1.0":
            self.reusable = False
        self._length = -1
        self._chunks = []
        for line in lines[1:]:
            self._header(line)
        if self._status in (204, 304):
            self._length = 0
        return False

    def _header(self, line: bytes) -> None:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length" and self._length != -2:
            value = value.strip()
            if not value.isdigit():
                raise HttpFailure("bad_response", f"bad Content-Length {value[:40]!r}")
            self._length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            self._length = -2  # chunked wins over any Content-Length (RFC 9112 6.3)
        elif name == b"connection" and b"close" in value.lower():
            self.reusable = False

    def _parse_chunks(self) -> None:
        buf = self._buf
        while True:
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                return
            size_text = bytes(buf[:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpFailure("bad_payload", f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                self._end_chunks(line_end + 2)
                return
            start = line_end + 2
            if len(buf) < start + size + 2:
                return
            if buf[start + size : start + size + 2] != b"\r\n":
                raise HttpFailure("bad_payload", "chunk not followed by CRLF")
            self._chunks.append(bytes(buf[start : start + size]))
            del buf[: start + size + 2]

    def _end_chunks(self, after_size: int) -> None:
        # The last chunk is followed by optional trailers and an empty line.
        rest = self._buf[after_size:]
        if rest[:2] == b"\r\n":
            extra = len(rest) - 2
        else:
            end = rest.find(b"\r\n\r\n")
            if end < 0:
                return
            extra = len(rest) - end - 4
        if extra:
            self.reusable = False
        self._finish(b"".join(self._chunks))

    def _finish(self, body: bytes) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._status, body))

    def _fail(self, exc: HttpFailure) -> None:
        self.close()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)


class Pool:
    """Keep-alive connections to one origin, for one event loop."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        # First in, first out: requests rotate over every open connection, so a server with
        # several worker processes gets its load spread over all of them.
        self._idle: deque[_Connection] = deque()
        self._all: set[_Connection] = set()
        self.opened = 0  # connections made so far (tests and diagnostics)
        self._host_header = b"Host: " + origin.netloc.encode("idna") + b"\r\n"

    def build(self, method: str, path: str, body: bytes = b"",
              content_type: str = "application/json") -> bytes:
        head = [method.encode("ascii"), b" ", _target(path), b" HTTP/1.1\r\n",
                self._host_header, b"User-Agent: ", _USER_AGENT, b"\r\nAccept: */*\r\n"]
        if body or method not in ("GET", "HEAD"):
            head += [b"Content-Type: ", content_type.encode("ascii"),
                     b"\r\nContent-Length: ", str(len(body)).encode("ascii"), b"\r\n"]
        head.append(b"\r\n")
        return b"".join(head) + body

    async def request(self, request: bytes, timeout_s: float) -> Response:
        """Sends one prepared request and returns the answer, within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        conn = self._take()
        if conn is not None:
            try:
                return await self._exchange(conn, request, deadline)
            except HttpFailure as exc:
                # The server may close an idle keep-alive connection just as we reuse it;
                # nothing was answered, so the request is sent again on a new connection.
                if exc.kind != "disconnected" or conn.received:
                    raise
        conn = await self._connect(deadline)
        return await self._exchange(conn, request, deadline)

    def _take(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.popleft()
            if conn.reusable and not conn.closed:
                return conn
        return None

    async def _connect(self, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop), self.origin.host, self.origin.port
                )
        except OSError as exc:
            raise HttpFailure("connect", str(exc)) from None
        self.opened += 1
        self._all.add(conn)
        sock = conn.transport.get_extra_info("socket") if conn.transport else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    async def _exchange(self, conn: _Connection, request: bytes, deadline: float) -> Response:
        waiter = conn.start(request)
        loop = conn.loop
        timer = loop.call_at(deadline, _expire, conn)
        try:
            response = await waiter
        except BaseException:
            conn.close()  # a timed-out or cancelled request leaves the stream mid-response
            self._all.discard(conn)
            raise
        finally:
            timer.cancel()
        conn.waiter = None
        if conn.reusable and not conn.closed:
            self._idle.append(conn)
        else:
            conn.close()
            self._all.discard(conn)
        return response

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._idle.clear()


def _target(path: str) -> bytes:
    try:
        return path.encode("ascii")
    except UnicodeEncodeError:
        return quote(path, safe=_SAFE).encode("ascii")


def _expire(conn: _Connection) -> None:
    if conn.waiter is not None and not conn.waiter.done():
        conn.waiter.set_exception(TimeoutError())
    conn.close()


class Pools:
    """One :class:`Pool` per origin, created on first use."""

    def __init__(self) -> None:
        self._pools: dict[Origin, Pool] = {}

    def get(self, origin: Origin) -> Pool:
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = Pool(origin)
        return pool

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
