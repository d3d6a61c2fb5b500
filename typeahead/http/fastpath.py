"""The keystroke fast path: ``GET /v1/suggest`` answered beneath aiohttp's web framework.

Why: a search box sends a request per keystroke, and aiohttp's request machinery (its parser
objects, ``Request`` and ``Response``, the middleware chain, signals and header multidicts)
costs more CPU per request than most answers do: a keystroke answered from the answer cache
took 275 µs of server CPU through aiohttp against 128 µs here (docs/benchmarks.md, 1 Dec
2026). At 1,000 keystrokes a second on one core that difference is a seventh of the core, and
it is what the queueing tail is made of.

How: every connection starts with a ``KeystrokeProtocol``. While its requests are plain
``GET /v1/suggest?…`` HTTP/1.1 requests without a body, arriving whole, with valid parameters,
it answers them itself: the same body, headers, metrics and sampled access log as the aiohttp
route. At the first request it does not take (another route or method, a body, HTTP/1.0, an
upgrade, a head split across reads, a parameter error, an index still loading, any failure),
it hands the connection, from that request's first byte on, to aiohttp's ``RequestHandler``
(``typeahead.http.connection``) for good. So every error is still rendered in one place
(``app.error_middleware``, or ``connection.render_error`` for what aiohttp's parser refuses),
and every other route keeps its one implementation; the fast path only ever writes a 200.

Strictness: behind a lenient proxy, any request the fast path reads differently from aiohttp's
parser is a smuggling primitive (a header line ended by a bare LF hides a ``Content-Length``
from one reader and not the other, and a body runs as a second request). So it takes only a
strict subset of what aiohttp accepts, read the same way: printable ASCII, every CR and LF in
a CRLF, one ``Host``, no repeated header, token-only ``Connection`` values it understands, few
headers; everything else is aiohttp's to judge. ``tests/test_fastpath_fuzz.py`` checks this
against aiohttp's own parsers (C and pure Python) on generated requests (``make fuzz``).
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import aiohttp
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.tcp_helpers import tcp_keepalive, tcp_nodelay

from typeahead import logs, metrics
from typeahead.http.app import (
    SERVICE,
    SETTINGS,
    SUGGEST_ROUTE,
    parse_k,
    parse_q,
    parse_query_string,
    request_id,
    should_log,
    suggest_body,
)
from typeahead.http.connection import Site
from typeahead.http.limits import LIMITS, SECURITY_HEADERS, Limits
from typeahead.settings import Settings

# The aiohttp minor version the fast path is tested with: it relies on private attributes
# (``_runner.server``, ``_sock``, ``_backlog``) and ``BaseSite.start``; pyproject pins the same.
TESTED_AIOHTTP = (3, 14)

HEAD_END = b"\r\n\r\n"
# A head bigger than this is aiohttp's to judge (it answers 400 or 431 by its own limits).
MAX_HEAD_BYTES = 8190
# More header lines than this are aiohttp's to judge (it refuses 128 or 129, by parser; a
# browser sends about 15).
MAX_HEADERS = 64
# Request headers whose meaning the fast path does not implement: their presence hands over.
# (aiohttp also refuses the old websocket handshake's Sec-WebSocket-Key1 outright.)
HAND_OVER_HEADERS = frozenset((b"content-length", b"transfer-encoding", b"upgrade", b"expect",
                               b"sec-websocket-key1"))
# Connection tokens the fast path obeys; any other ("upgrade", "te", ...) hands over.
CONNECTION_TOKENS = frozenset((b"close", b"keep-alive"))
# The bytes a head may hold: printable ASCII, space, tab, and CR and LF (which must pair up as
# CRLF, checked apart). NUL and other control bytes, DEL and bytes over 0x7f hand over.
_HEAD_BYTES = bytes(range(0x20, 0x7F)) + b"\t\r\n"
_TARGET = SUGGEST_ROUTE.encode("ascii")


class Keystroke(NamedTuple):
    """What the fast path needs of one request: its parameters and the few headers it obeys.
    (A named tuple: built on every keystroke, and a frozen dataclass costs three times more.)"""

    query: str
    request_id: str | None
    origin: str | None
    close: bool


def parse_head(head: bytes) -> Keystroke | None:
    """A request head (without its blank line) when it is one the fast path takes, else None."""
    # A few passes in C over a few hundred bytes: no byte aiohttp could refuse, and no bare CR
    # or LF (a line end to one parser and not to another: the classic way to hide a header).
    lines = head.count(b"\r\n")
    if (head.translate(None, _HEAD_BYTES) or head.count(b"\r") != lines
            or head.count(b"\n") != lines or not 0 < lines <= MAX_HEADERS):
        return None
    line, _, fields = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] != b"GET" or parts[2] != b"HTTP/1.1":
        return None
    path, mark, query = parts[1].partition(b"?")
    if path != _TARGET or b"#" in query or b"\t" in query:
        return None
    headers = _headers(fields)
    if headers is None or b"host" not in headers:  # HTTP/1.1 requires Host; aiohttp enforces it
        return None
    close = _closes(headers.get(b"connection"))
    if close is None:
        return None
    rid, origin = headers.get(b"x-request-id"), headers.get(b"origin")
    return Keystroke(query.decode("ascii") if mark else "", _text(rid), _text(origin), close)


def _headers(fields: bytes) -> dict[bytes, bytes] | None:
    """Header fields by lower-cased name, or None to hand over."""
    found: dict[bytes, bytes] = {}
    for field in fields.split(b"\r\n"):
        name, colon, value = field.partition(b":")
        # Letters, digits and dashes: every name a browser sends. Anything else, malformed or
        # folded or merely unusual, is aiohttp's to judge (it answers 400 where it must).
        if not colon or not name.replace(b"-", b"").isalnum():
            return None
        name = name.lower()
        # A repeat is aiohttp's to judge: it refuses some (Host, User-Agent), and which of
        # two values counts is where readers disagree.
        if name in HAND_OVER_HEADERS or name in found:
            return None
        found[name] = value.strip(b" \t")
    return found


def _closes(connection: bytes | None) -> bool | None:
    """Whether a ``Connection`` value asks to close; None (hand over) for a token we do not
    implement."""
    if connection is None or connection == b"keep-alive":
        return False
    tokens = {token.strip(b" \t") for token in connection.lower().split(b",")}
    tokens.discard(b"")
    if not tokens <= CONNECTION_TOKENS:
        return None
    return b"close" in tokens


def _text(value: bytes | None) -> str | None:
    # As aiohttp decodes header values, so ids and origins compare the same on both paths.
    return None if value is None else value.decode("utf-8", "surrogateescape")


class ResponseHead:
    """The bytes of a 200 head that never change, with the date refreshed once a second."""

    def __init__(self, limits: Limits | None) -> None:
        fixed = [("Content-Type", "application/json"), ("Server", SERVER_SOFTWARE),
                 *SECURITY_HEADERS.items()]
        self._fixed = ("HTTP/1.1 200 OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fixed)
                       ).encode("latin-1")
        self._limits = limits if limits is not None and limits.origins else None
        self._second = -1
        self._date = b""

    def render(self, length: int, rid: str, origin: str | None, close: bool) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._date = email.utils.formatdate(now, usegmt=True).encode("ascii")
        return b"%bContent-Length: %d\r\nDate: %b\r\nX-Request-ID: %b\r\n%b%b\r\n" % (
            self._fixed, length, self._date, rid.encode("ascii"), self._cors(origin),
            b"Connection: close\r\n" if close else b"")

    def _cors(self, origin: str | None) -> bytes:
        if self._limits is None:
            return b""  # CORS is off by default: no Access-Control headers at all
        return "".join(f"{name}: {value}\r\n" for name, value in
                       self._limits.cors_headers(origin)).encode("utf-8", "surrogateescape")


class KeystrokeProtocol(asyncio.Protocol):
    """One connection: keystrokes answered here until the first request aiohttp must take."""

    def __init__(self, site: KeystrokeSite) -> None:
        self._site = site
        self._transport: asyncio.Transport | None = None
        self._inner: Any = None  # aiohttp's RequestHandler once handed over
        self._buffer = b""
        self._paused = False
        self._closing = False
        self._last = 0.0
        self._idle: asyncio.TimerHandle | None = None

    # --- asyncio callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports implement asyncio.Transport without subclassing it)
        self._transport = cast(asyncio.Transport, transport)
        tcp_nodelay(self._transport, True)
        tcp_keepalive(self._transport)
        self._site.connections.add(self)
        self._last = self._site.loop.time()
        self._idle = self._site.loop.call_at(self._last + self._site.idle_timeout_s,
                                             self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)
            return
        self._last = self._site.loop.time()
        self._buffer += data
        if not self._paused:
            self._drain()

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return bool(self._inner.eof_received())
        return None  # the transport closes: nothing of ours is pending

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        # The client reads slower than it asks: stop answering (and reading) until it catches
        # up, so its unread answers cannot pile up in memory.
        if self._inner is not None:
            self._inner.pause_writing()
            return
        self._paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()
            return
        self._paused = False
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()
            self._drain()

    # --- the fast path ------------------------------------------------------------------

    def close(self) -> None:
        """Close an idle connection (shutdown); a handed-over one is aiohttp's to close."""
        if self._inner is None and self._transport is not None:
            self._closing = True
            self._transport.close()

    def _drain(self) -> None:
        """Answer every whole request in the buffer, in order, until one must be handed over.

        The buffer is cut once per call, not once per request: a client that pipelines a
        burst would otherwise have its remainder copied again for every request in it."""
        buffer, start = self._buffer, 0
        while start < len(buffer) and not self._paused and not self._closing:
            end = buffer.find(HEAD_END, start, start + MAX_HEAD_BYTES + len(HEAD_END))
            if end < 0:
                break  # split, oversized or not HTTP: aiohttp reads it its way
            keystroke = parse_head(buffer[start:end])
            if keystroke is None or (keystroke.close and end + len(HEAD_END) < len(buffer)):
                break  # (aiohttp refuses bytes after a Connection: close request)
            if (answer := self._site.answer(keystroke)) is None:
                break
            start = end + len(HEAD_END)
            assert self._transport is not None
            self._transport.write(answer)
            if keystroke.close:
                self._closing = True
                self._transport.close()
        self._buffer = buffer[start:] if start else buffer
        if self._buffer and not self._paused and not self._closing:
            self._hand_over()

    def _hand_over(self) -> None:
        """Give the connection, and the unanswered bytes, to aiohttp for the rest of its life."""
        self._forget()
        inner = self._site.handler()
        self._inner = inner
        inner.connection_made(self._transport)
        if self._paused:
            inner.pause_writing()
        data, self._buffer = self._buffer, b""
        inner.data_received(data)

    def _check_idle(self) -> None:
        if self._inner is not None or self._transport is None:
            return
        due = self._last + self._site.idle_timeout_s
        if self._site.loop.time() >= due:
            self.close()
        else:
            self._idle = self._site.loop.call_at(due, self._check_idle)

    def _forget(self) -> None:
        self._site.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None


def untested_aiohttp(version: str | None = None) -> str | None:
    """Why the installed aiohttp may not carry the fast path, or None when it is tested."""
    version = aiohttp.__version__ if version is None else version
    try:
        minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        minor = ()
    if minor == TESTED_AIOHTTP:
        return None
    tested = ".".join(map(str, TESTED_AIOHTTP))
    return (f"aiohttp {version} is not the version the keystroke fast path is tested with "
            f"({tested}.x): it is off, aiohttp's own path serves /v1/suggest")


class KeystrokeSite(Site):
    """Our socket site, whose connections start on the keystroke fast path."""

    def __init__(self, runner: web.AppRunner, sock: Any, *, backlog: int) -> None:
        super().__init__(runner, sock, backlog=backlog)
        self.connections: set[KeystrokeProtocol] = set()
        self.loop = asyncio.get_event_loop()
        # Idle keystroke connections close after the keep-alive timeout aiohttp's handlers
        # are given, so both paths agree.
        self.idle_timeout_s = self.settings.keepalive_timeout_s
        self._head = ResponseHead(self.app.get(LIMITS))

    def handler(self) -> Any:
        """A new aiohttp handler for a connection handed over."""
        assert self.new_handler is not None
        return self.new_handler()

    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        self.loop = asyncio.get_running_loop()
        return lambda: KeystrokeProtocol(self)

    async def stop(self) -> None:
        await super().stop()
        for conn in list(self.connections):
            conn.close()

    def answer(self, keystroke: Keystroke) -> bytes | None:
        """The whole 200 response for ``keystroke``, or None when aiohttp must answer it."""
        started = time.perf_counter()
        app = self.app
        settings = app[SETTINGS]
        service = app[SERVICE].current
        if service is None:
            return None  # aiohttp answers 503 not_ready
        rid = request_id(keystroke.request_id)
        token = logs.REQUEST_ID.set(rid)  # for every line logged while it is answered
        try:
            computed = _compute(service, settings, keystroke.query)
            if computed is None:
                return None
            q, body = computed
            head = self._head.render(len(body), rid, keystroke.origin, keystroke.close)
            self._record(settings, q, time.perf_counter() - started)
            return head + body
        finally:
            logs.REQUEST_ID.reset(token)

    def _record(self, settings: Settings, q: str, elapsed: float) -> None:
        metrics.get().observe_request(SUGGEST_ROUTE, "GET", 200, elapsed)
        if should_log(settings, SUGGEST_ROUTE, 200, elapsed):
            logs.access("GET", SUGGEST_ROUTE, SUGGEST_ROUTE, 200, elapsed,
                        q if logs.log_queries(settings) else None)


def _compute(service: Any, settings: Settings, query: str) -> tuple[str, bytes] | None:
    """``q`` and the JSON answer for a query string, or None when aiohttp must answer: a
    parameter error or any failure, which its error middleware renders (and logs) as it does
    every other error."""
    try:
        params = parse_query_string(query)
        q = parse_q(params, settings)
        return q, suggest_body(service, q, parse_k(params, settings))
    except Exception:
        return None
