"""The HTTP API: ``create_app(settings)`` builds the aiohttp application.

Every error leaves through ``error_middleware`` as ``{"error": {"code", "message"}}`` with the
status its class carries; nothing a client sends can produce a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from typeahead import logs, metrics
from typeahead.errors import (
    ArtifactError,
    InvalidEncoding,
    InvalidParameter,
    MethodNotAllowed,
    MissingParameter,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    TypeaheadError,
)
from typeahead.http.curation import Curation
from typeahead.http.curation_routes import CURATION, setup_curation_routes
from typeahead.http.limits import limits_middleware, setup_limits
from typeahead.http.openapi import spec as openapi_spec
from typeahead.http.readiness import READINESS, Readiness
from typeahead.http.reload import RELOADER, ReloadControl, Reloader, admin_reload, record_index
from typeahead.intent import IntentClassifier
from typeahead.numbers import parse_int
from typeahead.query_text import check_query
from typeahead.safety.policy import SuggestionPolicy
from typeahead.safety.rules import RuleSet
from typeahead.settings import Settings
from typeahead.suggest import LoadedIndex, SuggestService, load_index
from typeahead.suggest.charlm import with_char_lm
from typeahead.suggest.ranker import ranker_for

log = logging.getLogger("typeahead.http")

SETTINGS = web.AppKey("settings", Settings)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID = web.RequestKey("request_id", str)
SUGGEST_ROUTE = "/v1/suggest"


class ServiceHolder:
    """The current suggest service; swapping ``current`` is how an index is hot-reloaded."""

    def __init__(self) -> None:
        self.current: SuggestService | None = None
        self.rules = RuleSet()  # the curation rules in force, kept across index reloads

    async def apply_rules(self, rules: RuleSet) -> None:
        """Serve under ``rules``: their overlay judges every index entry, on a worker thread so
        keystrokes go on meanwhile; the newest rules win when changes overlap."""
        self.rules = rules
        service = self.current
        if service is None:
            return  # the index, once loaded, is served under self.rules
        overlay = await asyncio.to_thread(service.overlay_for, rules)
        if self.current is service and self.rules is rules:
            service.use_overlay(overlay)

    async def install(self, service: SuggestService) -> None:
        """Serve ``service`` (a reloaded index) from the next keystroke on, under the rules in
        force now: they may have changed while it loaded."""
        self.current = service
        if service.overlay.rules is not self.rules:
            await self.apply_rules(self.rules)

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
    """Request id, latency metrics and the access log line, around everything else."""
    started = time.perf_counter()
    rid = request_id(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID] = rid
    token = logs.REQUEST_ID.set(rid)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # redirects, which the error middleware lets through
        status = exc.status
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = _route_of(request)
        metrics.get().observe_request(route, request.method, status, elapsed)
        if route == "/v1/generate" and status in (200, 202):
            metrics.get().cache_result(hit=status == 200)
        if should_log(request.app[SETTINGS], route, status, elapsed):
            logs.access(request.method, route, request.path, status, elapsed,
                        _logged_query(request))
        logs.REQUEST_ID.reset(token)


SLOW_REQUEST_S = 0.1  # always logged, whatever the sampling


def request_id(sent: str | None) -> str:
    """The client's ``X-Request-ID`` when it is a sane token, else a new unique one.

    New ids are a random per-process prefix and a counter: unique across processes and
    restarts like a uuid4, at a tenth of its cost on the keystroke path."""
    if sent and len(sent) <= 64 and sent.isascii() and sent.isprintable():
        return sent
    return _IDS.new()


class _RequestIds:
    """Per-process id source; a forked child notices its new pid and draws a new prefix."""

    def __init__(self) -> None:
        self._pid = -1
        self._prefix = ""
        self._counter = itertools.count()

    def new(self) -> str:
        if self._pid != os.getpid():
            self._pid, self._prefix = os.getpid(), uuid.uuid4().hex[:16]
            self._counter = itertools.count(1)
        return f"{self._prefix}{next(self._counter):016x}"


_IDS = _RequestIds()


def should_log(settings: Settings, route: str, status: int, elapsed: float) -> bool:
    """Every request gets an access line except successful keystrokes, which are sampled:
    they are most of the traffic, a line costs about as much as the answer, and /metrics
    already counts every one."""
    if route != SUGGEST_ROUTE or status >= 400 or elapsed >= SLOW_REQUEST_S:
        return True
    share = settings.suggest_log_sample
    return share >= 1.0 or random.random() < share


def _route_of(request: web.Request) -> str:
    """The route's template (``/v1/generate/{id}``), so ids never become label values."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _logged_query(request: web.Request) -> str | None:
    if not logs.log_queries(request.app[SETTINGS]):
        return None
    return request.query.get("q")


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    # Here rather than in the middleware: streamed responses send their headers early.
    # (Security headers are added by typeahead.http.limits, on every response.)
    response.headers[REQUEST_ID_HEADER] = request.get(REQUEST_ID, "")


# --- parameters -----------------------------------------------------------------------------


def query_params(request: web.Request) -> dict[str, str]:
    return parse_query_string(request.rel_url.raw_query_string)


def parse_query_string(raw: str) -> dict[str, str]:
    """Decode a query string strictly: invalid percent-encoded UTF-8 is the caller's error.

    The same result as ``parse_qsl(raw, keep_blank_values=True, errors="strict")`` with the
    first occurrence of a key winning, in a third of its time: this runs on every keystroke,
    and most parameters need no unquoting at all."""
    params: dict[str, str] = {}
    try:
        for pair in raw.split("&"):
            if pair:
                key, _, value = pair.partition("=")
                params.setdefault(_unquote(key), _unquote(value))  # the first one wins
    except UnicodeDecodeError as exc:
        raise InvalidEncoding("the query string is not valid percent-encoded UTF-8") from exc
    return params


def _unquote(part: str) -> str:
    if "+" in part:
        part = part.replace("+", " ")
    return unquote(part, errors="strict") if "%" in part else part


def parse_q(params: dict[str, str], settings: Settings) -> str:
    q = params.get("q")
    if q is None:
        raise MissingParameter("parameter q is required")
    return check_query(q, settings.max_query_chars, name="q")


def parse_k(params: dict[str, str], settings: Settings) -> int:
    raw = params.get("k")
    if raw is None or raw == "":
        return settings.default_k
    try:
        k = parse_int(raw)
    except ValueError as exc:
        raise InvalidParameter(f"k must be an integer: {exc}") from None
    if not 1 <= k <= settings.max_k:
        raise InvalidParameter(f"k must be between 1 and {settings.max_k}, got {k}")
    return k


# --- handlers -------------------------------------------------------------------------------


async def suggest(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    params = query_params(request)
    q = parse_q(params, settings)
    k = parse_k(params, settings)
    return web.Response(body=suggest_body(request.app[SERVICE].get(), q, k),
                        content_type="application/json")


def suggest_body(service: SuggestService, q: str, k: int) -> bytes:
    """The JSON answer to one keystroke, with the server-side time in ``took_us``."""
    started = time.perf_counter_ns()
    body = service.encoded(q, k)
    took = (time.perf_counter_ns() - started) // 1000
    # The answer is a JSON object: add took_us by splicing rather than re-serialising.
    return b'%s,"took_us":%d}' % (body[:-1], took)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    service = request.app[SERVICE].current
    if service is None:
        raise ServiceUnavailable("the index is not loaded yet", code="not_ready")
    checks = {"index": "ok", **await _dependency_checks(request.app)}
    failed = [reason for reason in checks.values() if reason != "ok"]
    if failed:
        raise ServiceUnavailable("not ready: " + "; ".join(failed), code="not_ready")
    index = service.index
    return json_response({
        "status": "ready",
        "pid": os.getpid(),
        "index": {"path": str(index.path), "entries": index.entries,
                  "built_at": index.manifest.get("built_at")},
        "checks": checks,
    })


async def _dependency_checks(app: web.Application) -> dict[str, str]:
    settings = app[SETTINGS]
    probes = app[READINESS]
    checks: dict[str, str] = {}
    if settings.generation:
        from typeahead.generation.routes import GENERATION

        gen = app.get(GENERATION)
        reason = "generation store not started" if gen is None else await probes.redis(gen.redis)
        checks["redis"] = reason or "ok"
    if settings.llm_url:
        checks["llm"] = await probes.llm() or "ok"
    return checks


async def metrics_handler(request: web.Request) -> web.Response:
    m = metrics.get()
    m.sample_memory("api")
    await _sample_queue_depth(request.app, m)
    return web.Response(body=m.exposition(), headers={"Content-Type": metrics.CONTENT_TYPE})


async def _sample_queue_depth(app: web.Application, m: metrics.Metrics) -> None:
    if not app[SETTINGS].generation:
        return
    from typeahead.generation.routes import GENERATION

    gen = app.get(GENERATION)
    if gen is None:
        return
    with contextlib.suppress(Exception):  # Redis down: keep the last value, still answer
        m.queue_depth.set(await asyncio.wait_for(gen.jobs.depth(), 0.5))


async def openapi_handler(request: web.Request) -> web.Response:
    return json_response(openapi_spec(request.app[SETTINGS]))


# --- application ----------------------------------------------------------------------------


def load_service(settings: Settings, index_dir: Path | None = None,
                 rules: RuleSet | None = None) -> SuggestService:
    """Load an index with its semantic layer and the intent model into a ready service."""
    index: LoadedIndex = load_index(index_dir or settings.index_dir,
                                    verify=settings.verify_index, semantic=settings.semantic,
                                    student_dir=settings.student_dir)
    index = with_char_lm(index, settings.completion_lm_file)
    service = SuggestService(index=index, intent=load_intent(settings, index),
                             intent_threshold=settings.intent_threshold,
                             semantic=settings.semantic, results_k=settings.results_k,
                             results_per_article=settings.results_per_article,
                             results_fill=settings.results_fill,
                             cache_size=settings.suggest_cache_size,
                             policy=SuggestionPolicy.load(settings.safety_allow), rules=rules,
                             ranker=ranker_for(index, settings.completion_ranker,
                                               settings.completion_ranker_file))
    service.warm()
    return service


def load_intent(settings: Settings, index: LoadedIndex) -> Any:
    """The intent classifier, sharing the index's student; None when no model is installed.

    An explicitly configured model that fails to load is an error; a missing packaged default
    only disables the generate button.
    """
    student = index.semantic.student if index.semantic is not None else None
    try:
        return IntentClassifier.load(settings.intent_model_dir, student=student)
    except ArtifactError:
        if settings.intent_model_dir is not None:
            raise
        log.warning("no intent model: offer_generate stays false")
        return None


def create_app(settings: Settings, service: SuggestService | None = None, *,
               reload_control: Path | None = None) -> web.Application:
    """Build the app; the index is loaded at start-up unless a ready ``service`` is given.

    ``reload_control`` is the supervisor's directory that keeps several worker processes on
    one index across reloads (see ``typeahead.http.reload``).
    """
    app = web.Application(
        middlewares=[request_id_middleware, error_middleware, limits_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    holder = ServiceHolder()
    holder.current = service
    app[SERVICE] = holder
    control = ReloadControl(reload_control) if reload_control is not None else None
    # A reloaded index starts with the rules in force, so no keystroke sees it without them.
    app[RELOADER] = Reloader(settings, holder,
                             lambda s, d: load_service(s, d, rules=holder.rules), control)
    app[READINESS] = Readiness(settings)
    app.on_response_prepare.append(_on_prepare)
    setup_limits(app, settings)
    app.router.add_get(SUGGEST_ROUTE, suggest, allow_head=False)
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    app.router.add_get("/openapi.json", openapi_handler, allow_head=False)
    app.router.add_post("/admin/reload", admin_reload)
    setup_curation_routes(app, settings)
    app.cleanup_ctx.append(_curation_ctx)  # before the index loads: it starts with the rules
    if settings.metrics:
        app.router.add_get("/metrics", metrics_handler, allow_head=False)
    from typeahead.http.demo import setup_demo

    setup_demo(app)
    if settings.generation:
        from typeahead.generation.routes import setup_generation

        setup_generation(app, settings, served_docs=lambda: _served_docs(holder))
    if service is None:
        app.cleanup_ctx.append(_load_index_ctx)
    else:
        record_index(service)
    app.cleanup_ctx.append(_background_ctx)
    return app


def _served_docs(holder: ServiceHolder) -> Any | None:
    """The documents index of the service serving now (None without one, or before load)."""
    index = getattr(holder.current, "index", None)
    return getattr(getattr(index, "semantic", None), "docs", None)


async def _curation_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, holder = app[SETTINGS], app[SERVICE]
    curation = Curation(settings, holder.apply_rules, SuggestionPolicy.load(settings.safety_allow))
    app[CURATION] = curation
    await curation.start()
    follower = asyncio.create_task(curation.follow())
    yield
    follower.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follower
    await curation.close()


async def _load_index_ctx(app: web.Application) -> AsyncIterator[None]:
    reloader = app[RELOADER]
    service = load_service(app[SETTINGS], reloader.initial_dir(), app[SERVICE].rules)
    app[SERVICE].current = service
    record_index(service)
    yield


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    sampler = asyncio.create_task(metrics.sample_forever("api"))
    yield
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    await app[READINESS].close()
