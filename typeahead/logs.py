"""Structured logs: one JSON object per line on stderr, carrying the request id.

The HTTP layer puts each request's id in a context variable, so every line logged while that
request is handled (by any module) carries ``request_id``; the same id is returned to the
client in ``X-Request-ID``. Query text is personal data: it is never written at INFO; it
appears only in DEBUG lines, and only when ``TYPEAHEAD_LOG_QUERIES=true``.

``Redactor``, a filter on the one handler, holds that line for every logger, ours and
aiohttp's: outside DEBUG-with-opt-in it rewrites request lines, query strings and credential
values (``Authorization``, cookies, the API key header, bearer tokens) in messages, fields and
tracebacks, and an exception from aiohttp's HTTP parser (whose text quotes the offending
request bytes) keeps only its type.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
import traceback
from typing import IO, Any

import orjson

from typeahead.settings import Settings

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                         default=None)
ACCESS = logging.getLogger("typeahead.access")

# Attributes every LogRecord has; anything else came from ``extra=`` and is emitted as a field.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = REQUEST_ID.get()
        if rid is not None:
            out["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text  # a traceback the Redactor rewrote
        return orjson.dumps(out, default=str).decode()


REDACTED = "<redacted>"
# Header names whose values are credentials (the API key header is added from the settings).
SECRET_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key")
# A request line as parsers quote it (b'GET /v1/suggest?q=... HTTP/1.1'): the whole line goes.
_REQUEST_LINE = re.compile(r"[^\n'\"]*\bHTTP/\d[^\n'\"]*")
_QUERY = re.compile(r"\?[^\s'\"#]+")
_SCHEMES = re.compile(r"(?i)\b(bearer|basic|digest|token)(\s+)[^\s'\",]+")


class Redactor(logging.Filter):
    """Rewrites request lines, query strings and credentials out of a record (see above)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self._opt_in = settings.log_queries
        names = {*SECRET_HEADERS, settings.api_key_header.lower()}
        self._headers = re.compile(
            r"(?i)\b(" + "|".join(re.escape(n) for n in sorted(names)) + r")(\s*[:=]\s*)[^\n'\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if self._opt_in and record.levelno < logging.INFO:
            return True
        record.msg, record.args = self.redact(record.getMessage()), None
        for key, value in list(record.__dict__.items()):
            if key == "query":
                del record.__dict__[key]  # query text: DEBUG with the opt-in only
            elif key not in _STANDARD and isinstance(value, str):
                record.__dict__[key] = self.redact(value)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self._exception(record.exc_info[1])
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True

    def redact(self, text: str) -> str:
        text = _REQUEST_LINE.sub(REDACTED, text)
        text = _QUERY.sub("?" + REDACTED, text)
        text = self._headers.sub(r"\1\2" + REDACTED, text)
        return _SCHEMES.sub(r"\1\2" + REDACTED, text)

    def _exception(self, exc: BaseException) -> str:
        if _from_parser(exc):
            # The parser's text quotes the request; its traceback is aiohttp's, not ours.
            kind = type(exc)
            return f"{kind.__module__}.{kind.__qualname__} (details withheld: they quote it)"
        return self.redact("".join(traceback.format_exception(exc)).rstrip("\n"))


# aiohttp's parser errors, told by their class rather than imported: the worker logs through
# here too, and only the HTTP and generation tiers import aiohttp.
_PARSER_ERRORS = "aiohttp.http_exceptions"


def _from_parser(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 16:
        if any(c.__module__ == _PARSER_ERRORS and c.__name__ == "HttpProcessingError"
               for c in type(exc).__mro__):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _iso(created: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{whole}.{int(created % 1 * 1000):03d}Z"


def configure(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record through one JSON-lines handler on stderr (or ``stream``)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(Redactor(settings))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old.formatter, JsonFormatter):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    # Ours replaces aiohttp's access log, whose request line would carry the query string.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return handler


def log_queries(settings: Settings) -> bool:
    """Whether query text may be logged: an explicit opt-in, and DEBUG only."""
    return settings.log_queries and ACCESS.isEnabledFor(logging.DEBUG)


def access(method: str, route: str, path: str, status: int, seconds: float,
           query: str | None = None) -> None:
    """One line per request; ``query`` is passed only when ``log_queries`` allowed it."""
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {"method": method, "route": route, "path": path,
                              "status": status, "duration_ms": round(seconds * 1000, 3)}
    level = logging.INFO
    if query is not None:
        fields["query"] = query
        level = logging.DEBUG
    # makeRecord + handle skips the caller lookup (a stack walk) that .info() would do on
    # every request; the line is the same.
    ACCESS.handle(ACCESS.makeRecord(ACCESS.name, level, __file__, 0, "request", (), None,
                                    extra=fields))
