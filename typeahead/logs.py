"""Structured logs: one JSON object per line on stderr, carrying the request id.

The HTTP layer puts each request's id in a context variable, so every line logged while that
request is handled (by any module) carries ``request_id``; the same id is returned to the
client in ``X-Request-ID``. Query text is personal data: it is never written at INFO; it
appears only in DEBUG lines, and only when ``TYPEAHEAD_LOG_QUERIES=true``.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
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
        return orjson.dumps(out, default=str).decode()


def _iso(created: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{whole}.{int(created % 1 * 1000):03d}Z"


def configure(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record through one JSON-lines handler on stderr (or ``stream``)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
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
