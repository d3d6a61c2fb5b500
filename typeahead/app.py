"""The HTTP API: ``create_app(settings)`` builds the aiohttp application.

Every error leaves through ``error_middleware`` as ``{"error": {"code", "message"}}`` with the
status its class carries; nothing a client sends can produce a 500.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from typeahead.errors import (
    ArtifactError,
    InvalidEncoding,
    InvalidParameter,
    MethodNotAllowed,
    MissingParameter,
    NotFound,
    PayloadTooLarge,
    QueryTooLong,
    ServiceUnavailable,
    TypeaheadError,
)
from typeahead.index import LoadedIndex, load_index
from typeahead.settings import Settings
from typeahead.suggest import SuggestService

log = logging.getLogger("typeahead.http")

SETTINGS = web.AppKey("settings", Settings)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID = web.RequestKey("request_id", str)


class ServiceHolder:
    """The current suggest service; swapping ``current`` is how an index is hot-reloaded."""

    def __init__(self) -> None:
        self.current: SuggestService | None = None

    def get(self) -> SuggestService:
        if self.current is None:
            raise ServiceUnavailable("the index is not loaded yet", code="not_ready")
        return self.current


SERVICE: web.AppKey[ServiceHolder] = web.AppKey("service")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")


def error_response(exc: TypeaheadError) -> web.Response:
    body = {"error": {"code": exc.code, "message": exc.message}}
    return json_response(body, status=exc.status, headers=exc.headers())


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except TypeaheadError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        mapped = _map_http_exception(request, exc)
        if mapped is None:
            raise
        return error_response(mapped)
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return error_response(TypeaheadError("internal error; it has been logged"))


def _map_http_exception(request: web.Request, exc: web.HTTPException) -> TypeaheadError | None:
    if exc.status < 400:
        return None  # redirects pass through untouched
    if isinstance(exc, web.HTTPNotFound):
        return NotFound(f"no route {request.path}")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = tuple(sorted(exc.allowed_methods))
        return MethodNotAllowed(f"{request.method} is not allowed on {request.path}",
                                allowed=allowed)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge("request body too large")
    err = TypeaheadError(exc.reason or "error", code=_snake(exc.reason or "error"))
    err.status = exc.status
    return err


def _snake(text: str) -> str:
    return "_".join(text.lower().split()).replace("-", "_")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request.headers.get(REQUEST_ID_HEADER, "")
    if not (0 < len(rid) <= 64 and rid.isascii() and rid.isprintable()):
        rid = uuid.uuid4().hex
    request[REQUEST_ID] = rid
    response = await handler(request)
    response.headers[REQUEST_ID_HEADER] = rid
    return response


# --- parameters -----------------------------------------------------------------------------


def query_params(request: web.Request) -> dict[str, str]:
    """Decode the query string strictly: invalid percent-encoded UTF-8 is the caller's error."""
    raw = request.rel_url.raw_query_string
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise InvalidEncoding("the query string is not valid percent-encoded UTF-8") from exc
    params: dict[str, str] = {}
    for key, value in pairs:
        params.setdefault(key, value)  # the first occurrence wins
    return params


def parse_q(params: dict[str, str], settings: Settings) -> str:
    q = params.get("q")
    if q is None:
        raise MissingParameter("parameter q is required")
    if not q.strip():
        raise MissingParameter("parameter q must not be empty")
    if len(q) > settings.max_query_chars:
        raise QueryTooLong(f"q is {len(q)} characters; the limit is {settings.max_query_chars}")
    if "\x00" in q:
        raise InvalidParameter("q must not contain NUL characters")
    return q


def parse_k(params: dict[str, str], settings: Settings) -> int:
    raw = params.get("k")
    if raw is None or raw == "":
        return settings.default_k
    try:
        k = int(raw)
    except ValueError:
        raise InvalidParameter(f"k must be an integer, got {raw[:20]!r}") from None
    if not 1 <= k <= settings.max_k:
        raise InvalidParameter(f"k must be between 1 and {settings.max_k}, got {k}")
    return k


# --- handlers -------------------------------------------------------------------------------


async def suggest(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    params = query_params(request)
    q = parse_q(params, settings)
    k = parse_k(params, settings)
    started = time.perf_counter_ns()
    body = request.app[SERVICE].get().suggest(q, k)
    body["took_us"] = (time.perf_counter_ns() - started) // 1000
    return json_response(body)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    service = request.app[SERVICE].current
    if service is None:
        raise ServiceUnavailable("the index is not loaded yet", code="not_ready")
    index = service.index
    return json_response({
        "status": "ready",
        "pid": os.getpid(),
        "index": {"path": str(index.path), "entries": index.entries,
                  "built_at": index.manifest.get("built_at")},
    })


# --- application ----------------------------------------------------------------------------


def load_service(settings: Settings, index_dir: Path | None = None) -> SuggestService:
    """Load an index with its semantic layer and the intent model into a ready service."""
    index: LoadedIndex = load_index(index_dir or settings.index_dir,
                                    verify=settings.verify_index, semantic=settings.semantic)
    return SuggestService(index=index, intent=load_intent(settings, index),
                          intent_threshold=settings.intent_threshold,
                          semantic=settings.semantic, results_k=settings.results_k)


def load_intent(settings: Settings, index: LoadedIndex) -> Any:
    """The intent classifier, sharing the index's student; None when no model is installed.

    An explicitly configured model that fails to load is an error; a missing packaged default
    only disables the generate button.
    """
    try:
        from typeahead.intent import IntentClassifier
    except ImportError:
        return None
    student = index.semantic.student if index.semantic is not None else None
    try:
        return IntentClassifier.load(settings.intent_model_dir, student=student)
    except ArtifactError:
        if settings.intent_model_dir is not None:
            raise
        log.warning("no intent model: offer_generate stays false")
        return None


def create_app(settings: Settings, service: SuggestService | None = None) -> web.Application:
    """Build the app; the index is loaded at start-up unless a ready ``service`` is given."""
    app = web.Application(
        middlewares=[request_id_middleware, error_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    holder = ServiceHolder()
    holder.current = service
    app[SERVICE] = holder
    app.router.add_get("/v1/suggest", suggest, allow_head=False)
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    if settings.generation:
        from typeahead.generate_routes import setup_generation

        setup_generation(app, settings)
    if service is None:
        app.cleanup_ctx.append(_load_index_ctx)
    return app


async def _load_index_ctx(app: web.Application) -> AsyncIterator[None]:
    app[SERVICE].current = load_service(app[SETTINGS])
    yield
