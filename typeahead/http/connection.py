"""HTTP/1.1 connections beneath the app: aiohttp's ``RequestHandler`` with what it lacks.

Both request paths use it: ``Site`` gives every connection one, and the keystroke fast path
(``typeahead.http.fastpath``) hands its connections over to one. It adds:

* one renderer for errors found before a request reaches the app: aiohttp's parser refusing a
  head or its framing, or a request line naming an HTTP version other than 1.0 and 1.1 (which
  aiohttp would serve, echoing ``HTTP/2.0`` in its status line). They get the JSON shape
  ``{"error": {"code", "message"}}``, ``X-Request-ID`` and the security headers, like every
  other error, instead of aiohttp's ``text/plain`` page that quotes the offending line. What
  the client sent (a query, a bearer token) is neither echoed nor logged;
* a head timeout: a connection that starts a request head must finish it within
  ``Settings.head_timeout_s``. aiohttp only closes a connection idle for its keep-alive
  timeout, counted from the last response, so a client trickling a head could hold one that
  long (an hour by aiohttp's default; ``Settings.keepalive_timeout_s`` here).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    BadStatusLine,
    ContentEncodingError,
    ContentLengthError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    TransferEncodingError,
)
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler as AiohttpRequestHandler
from aiohttp.web_protocol import _ErrInfo

from typeahead.errors import MalformedRequest, TypeaheadError, VersionNotSupported
from typeahead.http.app import REQUEST_ID_HEADER, SETTINGS, error_response, request_id
from typeahead.http.limits import SECURITY_HEADERS
from typeahead.settings import Settings

log = logging.getLogger("typeahead.http")

SUPPORTED_VERSIONS = (HttpVersion10, HttpVersion11)

# What each parser error tells the client: a fixed sentence per kind, never the parser's own
# message, which quotes the offending bytes. Most specific first (BadHttpMethod is a
# BadStatusLine, every one of them a BadHttpMessage).
_PARSER_ERRORS: tuple[tuple[type[BaseException], str, str], ...] = (
    (BadHttpMethod, "bad_method", "the request method is not a valid token"),
    (InvalidURLError, "bad_target",
     "the request target is malformed or holds bytes that must be percent-encoded"),
    (BadStatusLine, "bad_request_line",
     "the request line is malformed; expected METHOD TARGET HTTP/1.1"),
    (LineTooLong, "line_too_long", "the request line or a header field is too long"),
    (InvalidHeader, "bad_header", "a header field is malformed or holds a forbidden byte"),
    (ContentEncodingError, "bad_content_encoding",
     "the body could not be decoded with its Content-Encoding"),
    (TransferEncodingError, "bad_transfer_encoding", "the chunked body is malformed"),
    (ContentLengthError, "bad_content_length", "the body is shorter than its Content-Length"),
)
# The reasons aiohttp and llhttp give (fixed sentences such as "Missing 'Host' header in
# request." or "Missing expected CR after header value") come before any quoted bytes; one made
# of these characters only is passed on, anything else gets the generic sentence.
_SAFE_REASON = re.compile(r"[A-Z][A-Za-z '`:-]{2,80}\.?")
_GENERIC = "the request is not valid HTTP/1.1"


def parser_error(status: int, exc: BaseException | None) -> TypeaheadError:
    """Our error for what aiohttp's protocol layer refused (``status`` is the one it chose)."""
    if isinstance(exc, TypeaheadError):
        return exc
    if status >= 500:
        error = TypeaheadError("internal error; it has been logged")
        error.status = status
        return error
    for kind, code, message in _PARSER_ERRORS:
        if isinstance(exc, kind):
            return MalformedRequest(message, code=code)
    text = exc.message if isinstance(exc, BadHttpMessage) else ""
    reason = text.split(":\n", 1)[0].split("\n", 1)[0].strip()
    return MalformedRequest(reason if _SAFE_REASON.fullmatch(reason) else _GENERIC)


def render_error(error: TypeaheadError) -> web.Response:
    """The response for an error no middleware sees: the app's JSON shape, a new request id
    and the security headers (the response hooks that add them run only for routed requests).
    The connection closes after it, as aiohttp closes it after any such error."""
    response = error_response(error)
    response.headers[REQUEST_ID_HEADER] = request_id(None)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.force_close()
    return response


class RequestHandler(AiohttpRequestHandler):
    """aiohttp's connection handler with our parser-error renderer and a head timeout."""

    __slots__ = ("_head_timeout_s", "_head_timer")

    def __init__(self, manager: web.Server, *, head_timeout_s: float, **options: Any) -> None:
        super().__init__(manager, **options)
        self._head_timeout_s = head_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        queued = len(self._messages)
        idle = not queued and not self._request_in_progress
        super().data_received(data)
        if len(self._messages) > queued:
            self._refuse_versions(queued)
            self._stop_head_timer()
        elif idle and data and self._head_timer is None and self.transport is not None:
            # The first bytes of a head: the whole head is due within the head timeout.
            self._head_timer = self._loop.call_later(self._head_timeout_s, self._head_late)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None, message: str | None = None
                     ) -> web.StreamResponse:
        error = parser_error(status, exc)
        if error.status >= 500:
            log.error("error outside the app", exc_info=exc)  # redacted by logs' filter
        else:
            # INFO, no traceback: a client's mistake, and the parser's text quotes its bytes.
            log.info("malformed request refused",
                     extra={"status": error.status, "code": error.code})
        if request.writer.output_size > 0:  # a response has begun: only closing is left
            raise ConnectionError("an error after the response started")
        return render_error(error)

    def _refuse_versions(self, start: int) -> None:
        """Replace the first new request naming an unsupported HTTP version (HTTP/2.0 and
        HTTP/0.9 reach aiohttp's handler otherwise) by a 505; drop what follows it, as the
        connection closes after the error."""
        for index in range(start, len(self._messages)):
            message = self._messages[index][0]
            if isinstance(message, _ErrInfo) or message.version in SUPPORTED_VERSIONS:
                continue
            version = f"{message.version.major}.{message.version.minor}"
            refused = VersionNotSupported(
                f"HTTP/{version} is not supported; send HTTP/1.1 (or HTTP/1.0)")
            self._messages[index] = (_ErrInfo(status=refused.status, exc=refused,
                                              message=refused.message), EMPTY_PAYLOAD)
            while len(self._messages) > index + 1:
                self._messages.pop()
            return

    def _head_late(self) -> None:
        self._head_timer = None
        if not self._messages and not self._request_in_progress:
            log.info("request head not complete within %.0f s; closing", self._head_timeout_s)
            self.force_close()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


def handler_factory(runner: web.AppRunner, settings: Settings) -> Callable[[], RequestHandler]:
    """New ``RequestHandler``s with the runner's own handler options (what aiohttp's
    ``web.Server`` would pass its handlers) and our timeouts."""
    server = runner.server
    assert server is not None
    loop = asyncio.get_running_loop()
    options = {**server._kwargs, "keepalive_timeout": settings.keepalive_timeout_s}
    head = settings.head_timeout_s

    def make() -> RequestHandler:
        return RequestHandler(server, loop=loop, head_timeout_s=head, **options)

    return make


class Site(web.SockSite):
    """aiohttp's socket site whose connections get our ``RequestHandler``."""

    def __init__(self, runner: web.AppRunner, sock: Any, *, backlog: int) -> None:
        super().__init__(runner, sock, backlog=backlog)
        self.app = runner.app
        self.settings = self.app[SETTINGS]
        self.new_handler: Callable[[], RequestHandler] | None = None

    async def start(self) -> None:
        await web.BaseSite.start(self)
        assert isinstance(self._runner, web.AppRunner)
        self.new_handler = handler_factory(self._runner, self.settings)
        self._server = await asyncio.get_running_loop().create_server(
            self.protocol_factory(), sock=self._sock, backlog=self._backlog)

    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        assert self.new_handler is not None
        return self.new_handler
