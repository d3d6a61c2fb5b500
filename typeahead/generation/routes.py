"""HTTP routes of the generation tier: submit, poll, and stream a summary.

``setup_generation(app, settings)`` adds the three routes and a cleanup context that owns the
Redis clients, the process's event-stream reader (``typeahead.generation.hub``) and, when
``REDIS_URL`` is unset, an embedded ``redis-server`` plus an in-process worker (so one machine
runs everything). Errors are raised as ``TypeaheadError`` subclasses and
rendered by the application's error middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web

from typeahead import keys, metrics
from typeahead.embed import Embedder
from typeahead.errors import (
    InvalidBody,
    InvalidParameter,
    MissingParameter,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from typeahead.generation.cache import HotSummaries, SemanticCache, get_summary
from typeahead.generation.extractive import load_embedder
from typeahead.generation.hub import FINAL_EVENTS, REDIS_LOST, Hub, make_hub, sse
from typeahead.generation.inline import InlineRunner
from typeahead.generation.llm import Backend, VLLMBackend, make_backend
from typeahead.generation.prompt import PROMPT_VERSION
from typeahead.generation.queue import (
    REDIS_DOWN,
    Event,
    Jobs,
    RedisGuard,
    Submission,
    job_id,
    layout_for,
    let_send,
    open_redis,
    stream_id,
    valid_job_id,
)
from typeahead.generation.worker import Worker
from typeahead.http.limits import client_of
from typeahead.http.ratelimit import ClientLimits, Ticket
from typeahead.process_tree import die_with_parent
from typeahead.query_text import check_query
from typeahead.settings import Settings

STREAM_BLOCK_MS = 1000  # the keep-alive period of an idle event stream, and the longest read
QUEUE_FULL_RETRY_S = 2.0
NEW_JOB = ("claimed", "new")  # submission outcomes that start a job: an LLM call
OVER_BUDGET_PAUSES_S = (0.0, 0.05, 0.2)  # a client out of job budget: when to look again


@dataclass
class Generation:
    settings: Settings
    redis: aioredis.Redis  # short timeouts: every request path
    stream_redis: aioredis.Redis  # the stream hub's one blocking read of every event stream
    jobs: Jobs
    hub: Hub
    guard: RedisGuard
    model_id: str
    memory: HotSummaries  # cached summaries this process served lately
    limits: ClientLimits  # every client's generate budgets, shared through Redis
    semantic: SemanticCache | None = None
    inline: InlineRunner | None = None  # runs the jobs this process creates (vLLM only)


GENERATION = web.AppKey("generation", Generation)


def listen_grace_s(settings: Settings) -> float:
    """How long a job waits for a listener before a worker may cancel it (0: never)."""
    return settings.generate_unwatched_grace_s if settings.generate_cancel_unwatched else 0.0


def setup_generation(app: web.Application, settings: Settings, *,
                     served_docs: Callable[[], Any | None] | None = None) -> None:
    """The routes and their Redis clients. ``served_docs``: the documents index the process
    serves instant results from (None when it has none), for grounding inline jobs."""
    app.router.add_post("/v1/generate", post_generate)
    app.router.add_get("/v1/generate/{id}", get_generate)
    app.router.add_get("/v1/generate/{id}/stream", stream_generate)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        async with generation_context(settings, served_docs=served_docs) as gen:
            app[GENERATION] = gen
            yield

    app.cleanup_ctx.append(lifetime)


@contextlib.asynccontextmanager
async def generation_context(
    settings: Settings, *, embedder: Embedder | None = None, backend: Backend | None = None,
    served_docs: Callable[[], Any | None] | None = None,
) -> AsyncIterator[Generation]:
    """Redis clients (and, without REDIS_URL, an embedded Redis and worker) for the app's life."""
    embedder = embedder if embedder is not None or settings.llm_url else load_embedder()
    backend = backend if backend is not None else make_backend(settings, embedder)
    async with contextlib.AsyncExitStack() as stack:
        url: str | None = (None if settings.uses_redis
                           else await stack.enter_async_context(_embedded_redis()))
        gen = _open(settings, url, backend.model_id, embedder)
        stack.push_async_callback(gen.stream_redis.aclose)
        stack.push_async_callback(gen.redis.aclose)
        if settings.redis_cluster:
            # A cluster client learns the slot map on its first command, a round trip to
            # several nodes; learning it here keeps that out of the first request's breaker
            # budget (TYPEAHEAD_REDIS_TIMEOUT_S). A cluster not reachable yet is learnt later.
            with contextlib.suppress(aioredis.RedisError, OSError, TimeoutError):
                await gen.redis.initialize()
        gen.hub.start()
        stack.push_async_callback(gen.hub.close)  # first: streams end before the clients go
        if url is not None:
            await stack.enter_async_context(_embedded_worker(settings, url, backend, embedder))
        elif settings.generate_inline_jobs > 0 and isinstance(backend, VLLMBackend):
            gen.inline = await stack.enter_async_context(
                _inline_runner(gen, backend, embedder, served_docs))
        yield gen


def _open(settings: Settings, url: str | None, model_id: str, embedder: Embedder | None
          ) -> Generation:
    """Clients of the configured store (``url``: the embedded Redis instead)."""
    redis = open_redis(settings, read_timeout_s=1.0, url=url)
    stream_redis = open_redis(settings, read_timeout_s=STREAM_BLOCK_MS / 1000 + 2.0, url=url)
    layout = layout_for(settings)
    semantic = None
    if settings.semantic_cache and embedder is not None:
        semantic = SemanticCache(redis, embedder, f"{model_id}:{PROMPT_VERSION}",
                                 settings.semantic_cache_threshold, layout=layout)
    jobs = Jobs(redis, layout=layout)
    hub = make_hub(Jobs(stream_redis, layout=layout), jobs, period_s=STREAM_BLOCK_MS / 1000,
                   listen_s=listen_grace_s(settings),
                   outage_s=settings.generate_stream_outage_s)
    memory = HotSummaries(settings.generate_memory_cache_size, settings.generate_memory_cache_s)
    guard = RedisGuard(timeout_s=settings.redis_timeout_s)
    limits = ClientLimits(settings, redis, guard)
    return Generation(settings, redis, stream_redis, jobs, hub, guard, model_id, memory,
                      limits, semantic)


@contextlib.asynccontextmanager
async def _embedded_redis() -> AsyncIterator[str]:
    """A private redis-server on a Unix socket, for the single-machine set-up."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceUnavailable("generation needs REDIS_URL (no redis-server binary found)")
    workdir = tempfile.mkdtemp(prefix="typeahead-redis-")
    sock = Path(workdir) / "redis.sock"
    proc = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no",
         "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,  # dies with this process, even one killed with SIGKILL
    )
    try:
        for _ in range(100):
            if sock.exists():
                break
            await asyncio.sleep(0.05)
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.asynccontextmanager
async def _embedded_worker(
    settings: Settings, url: str, backend: Backend, embedder: Embedder | None,
) -> AsyncIterator[None]:
    from typeahead.generation.grounding import load_retriever
    from typeahead.generation.worker import semantic_cache

    embedder = embedder or load_embedder()
    retriever = load_retriever(settings.index_dir, None, embedder)
    redis = open_redis(settings, read_timeout_s=5.0, url=url)
    worker = Worker(Jobs(redis), backend, retriever, settings, name="embedded",
                    semantic=semantic_cache(settings, redis, embedder, backend.model_id))
    try:
        async with _running(worker):
            yield
    finally:
        await redis.aclose()


@contextlib.asynccontextmanager
async def _running(worker: Worker) -> AsyncIterator[None]:
    """``worker.run`` (or an inline runner's) for the context's life; then it stops and its
    LLM backend is closed."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await worker.backend.close()


@contextlib.asynccontextmanager
async def _inline_runner(
    gen: Generation, backend: Backend, embedder: Embedder | None,
    served_docs: Callable[[], Any | None] | None,
) -> AsyncIterator[InlineRunner]:
    """This process runs the jobs it creates (see ``typeahead.generation.inline``), grounded on the
    documents index it already serves instant results from; else on what a worker would use."""
    from typeahead.generation.grounding import Retriever, ServedDocs, load_retriever

    settings = gen.settings

    def own() -> Retriever:
        return load_retriever(settings.index_dir, None, embedder)

    if served_docs is not None and settings.semantic and (settings.index_dir / "docs").is_dir():
        retriever: Retriever = ServedDocs(served_docs, own)
    else:
        retriever = own()  # loaded now, not on the first job's event loop
    runner = InlineRunner(gen.jobs, backend, retriever, gen.settings, gen.hub,
                          semantic=gen.semantic)
    async with _running(runner):
        yield runner


# --- handlers -------------------------------------------------------------------------------


def _json(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


async def read_query(request: web.Request, settings: Settings) -> str:
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        raise PayloadTooLarge(f"request body over {settings.max_body_bytes} bytes")
    raw = await request.read()
    if len(raw) > settings.max_body_bytes:
        raise PayloadTooLarge(f"request body over {settings.max_body_bytes} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody("request body is not valid JSON") from exc
    if not isinstance(body, dict) or "query" not in body:
        raise MissingParameter('request body must be a JSON object with a "query" field')
    query = body["query"]
    if not isinstance(query, str) or not query.strip():
        raise InvalidParameter('"query" must be a non-empty string')
    return check_query(" ".join(query.split()), settings.max_query_chars, name="query")


def _done(job: str, result: dict[str, Any], *, cached: bool) -> web.Response:
    payload = {
        "id": job, "status": "done", "summary": result.get("summary", ""),
        "sources": result.get("sources", []), "cached": cached,
    }
    return _json(payload)


async def post_generate(request: web.Request) -> web.Response:
    """Every request spends from its client's request budget; one that starts a job (an LLM
    call) also from its job budget (``typeahead.http.ratelimit``)."""
    gen = request.app[GENERATION]
    client = client_of(request)
    query = await read_query(request, gen.settings)
    job = job_id(query, PROMPT_VERSION, gen.model_id)
    remembered = gen.memory.get(job)
    if remembered is not None:
        await gen.limits.admit(client)
        return _done(job, remembered, cached=True)
    # Without the semantic cache (whose lookup must come between), the exact cache check and
    # the enqueue are one script call: an uncached request saves a round trip. The request's
    # budgets are then spent in one call too.
    if gen.semantic is None:
        ticket = await gen.limits.admit_and_reserve(client)
    else:
        await gen.limits.admit(client)
        hit = await _cache_hit(gen, job, query)
        if hit is not None:
            return _done(hit[0], hit[1], cached=True)
        ticket = await gen.limits.reserve(client)
    if not ticket.granted:
        return await _over_job_budget(gen, job, query, ticket)
    return await _charged(gen, job, query, ticket)


async def _cache_hit(gen: Generation, job: str, query: str) -> tuple[str, dict[str, Any]] | None:
    """The job's cached summary, or a semantic neighbour's."""
    cached = await gen.guard(lambda: get_summary(gen.redis, job, gen.jobs.layout),
                             gen.jobs.scope(job))
    if cached is not None:
        gen.memory.put(job, cached)
        return job, cached
    return await _semantic_hit(gen, query)


async def _charged(gen: Generation, job: str, query: str, ticket: Ticket) -> web.Response:
    """Create or join the job; the reserved job token goes back unless a job was created."""
    sub: Submission | None = None
    try:
        sub = await _submit(gen, job, query, check_cache=gen.semantic is None)
    finally:
        if sub is None or sub.outcome not in NEW_JOB:
            await gen.limits.give_back(ticket)
    return _answer(gen, job, sub)


async def _over_job_budget(gen: Generation, job: str, query: str,
                           ticket: Ticket) -> web.Response:
    """A client out of job budget still gets what costs nothing: the cached summary, or the
    job that is running. A burst of one client's identical requests holds tokens that all but
    one give back as soon as they have joined the job; so this looks again, twice, before it
    refuses (without the semantic cache the exact cache was not asked yet)."""
    for pause in OVER_BUDGET_PAUSES_S:
        await asyncio.sleep(pause)
        if pause:
            ticket = await gen.limits.reserve(ticket.client)
            if ticket.granted:
                return await _charged(gen, job, query, ticket)
        existing = await _existing(gen, job, query)
        if existing is not None:
            return existing
    raise gen.limits.job_refused(ticket)


async def _existing(gen: Generation, job: str, query: str) -> web.Response | None:
    """The job's answer when it costs no LLM call: cached, or joining the job that runs."""
    if gen.semantic is None:
        cached = await gen.guard(lambda: get_summary(gen.redis, job, gen.jobs.layout),
                                 gen.jobs.scope(job))
        if cached is not None:
            gen.memory.put(job, cached)
            return _done(job, cached, cached=True)
    record = await gen.guard(lambda: gen.jobs.record(job), gen.jobs.scope(job))
    if record.get("status") not in ("queued", "running"):
        return None
    return _answer(gen, job, await _submit(gen, job, query, check_cache=False))


def _answer(gen: Generation, job: str, sub: Submission) -> web.Response:
    if sub.outcome == "full":
        raise ServiceUnavailable("the generation queue is full; retry shortly",
                                 code="queue_full", retry_after=QUEUE_FULL_RETRY_S)
    if sub.outcome in ("done", "cached") and sub.result is not None:
        gen.memory.put(job, sub.result)
        return _done(job, sub.result, cached=True)
    stream_url = f"/v1/generate/{job}/stream"
    return _json({"id": job, "status": sub.status, "stream_url": stream_url}, status=202)


async def _submit(gen: Generation, job: str, query: str, *, check_cache: bool) -> Submission:
    """Create, join or find the job; a job this call creates runs in this process when it has
    a free inline slot (``typeahead.generation.inline``), else it goes on the queue."""
    inline = gen.inline
    owner = inline.name if inline is not None and inline.reserve() else ""
    settings = gen.settings
    claim = gen.guard(lambda: gen.jobs.submit(
        job, query, deadline_s=settings.job_deadline_s, max_depth=settings.queue_max_depth,
        listen_s=listen_grace_s(settings), check_cache=check_cache, owner=owner,
        lease_s=settings.job_claim_idle_s,
    ), gen.jobs.scope(job))
    if inline is None or not owner:
        return _counted(await claim)
    try:
        if inline.worth_prefetching(job):
            sub, docs = await inline.with_documents(query, claim)
        else:
            sub, docs = await claim, None
    except BaseException:
        inline.unreserve()
        raise
    if sub.outcome == "claimed":
        inline.start(job, query, created=sub.created,
                     deadline=sub.created + settings.job_deadline_s, docs=docs)
        await let_send()  # the LLM request goes out before this response is written
    else:
        inline.unreserve()
        inline.existed(job)
    return _counted(sub)


def _counted(sub: Submission) -> Submission:
    """Count a job this request created, by where it runs (``/metrics``)."""
    if sub.outcome in NEW_JOB:
        metrics.get().job_started("inline" if sub.outcome == "claimed" else "queue")
    return sub


async def _semantic_hit(gen: Generation, query: str) -> tuple[str, dict[str, Any]] | None:
    semantic = gen.semantic
    if semantic is None:
        return None
    hit = await gen.guard(lambda: semantic.lookup(query))
    if hit is None:
        return None
    result = await gen.guard(lambda: get_summary(gen.redis, hit[0], gen.jobs.layout),
                             gen.jobs.scope(hit[0]))
    if result is None:
        semantic.forget(hit[0])  # expired: a miss
        return None
    return hit[0], result


def _job_param(request: web.Request) -> str:
    job = request.match_info["id"]
    if not valid_job_id(job):
        raise NotFound(f"no generation job with id {job[:40]!r}")
    return job


async def _lookup(gen: Generation, job: str) -> tuple[dict[str, str], dict[str, Any] | None]:
    """A job's record, or, where it has none, its cached summary: this process's memory is
    asked first, so a summary served lately is answered even while Redis is down. Raises
    NotFound when there is neither. (The GET and the event stream look a job up alike.)"""
    remembered = gen.memory.get(job)
    if remembered is not None:
        return {}, remembered
    record = await gen.guard(lambda: gen.jobs.record(job), gen.jobs.scope(job))
    if record:
        return record, None
    cached = await gen.guard(lambda: get_summary(gen.redis, job, gen.jobs.layout),
                             gen.jobs.scope(job))
    if cached is None:
        raise NotFound(f"no generation job with id {job!r}")
    return {}, cached


async def get_generate(request: web.Request) -> web.Response:
    gen = request.app[GENERATION]
    job = _job_param(request)
    record, cached = await _lookup(gen, job)
    if cached is not None:
        return _done(job, cached, cached=True)
    await _polled(gen, job, record)
    return _json(status_payload(job, record))


async def _polled(gen: Generation, job: str, record: dict[str, str]) -> None:
    """A client polling an unfinished job wants its answer as much as one streaming it."""
    grace = listen_grace_s(gen.settings)
    if grace and record.get("status") in ("queued", "running") and (
            record.get(keys.LISTENER_FIELD) == "1"):
        await gen.guard(lambda: gen.jobs.listen(job, grace), gen.jobs.scope(job))


def status_payload(job: str, record: dict[str, str]) -> dict[str, Any]:
    status = record.get("status", "queued")
    payload: dict[str, Any] = {"id": job, "status": status}
    if status == "done" and record.get("result"):
        result = orjson.loads(record["result"])
        payload.update(summary=result.get("summary", ""), sources=result.get("sources", []))
    elif status == "failed":
        payload["error"] = record.get("error", "generation failed")
    return payload


# --- the event stream -----------------------------------------------------------------------


def after_last_reset(events: Sequence[Event]) -> list[Event]:
    """A late joiner needs only the current attempt's text: drop what a reset superseded."""
    for i in range(len(events) - 1, -1, -1):
        if events[i].type == "reset":
            return list(events[i + 1 :])
    return list(events)


def _last_event_id(request: web.Request) -> str:
    """Where a reconnecting client resumes ("0-0": from the start)."""
    value = request.headers.get("Last-Event-ID", "").strip()
    if not value:
        return "0-0"
    pair = stream_id(value)
    if pair is None:
        raise InvalidParameter(f"Last-Event-ID {value[:40]!r} is not an event id of this stream")
    return f"{pair[0]}-{pair[1]}"


async def stream_generate(request: web.Request) -> web.StreamResponse:
    gen = request.app[GENERATION]
    job = _job_param(request)
    last = _last_event_id(request)
    _, cached = await _lookup(gen, job)  # a cached summary is the stream's whole answer
    resp = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # a proxy must pass tokens through, not buffer them
    })
    await resp.prepare(request)
    with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
        if cached is not None:
            await resp.write(sse("done", orjson.dumps(cached).decode()))
        else:
            await _pump(gen, job, resp, last)
    return resp


async def _pump(gen: Generation, job: str, resp: web.StreamResponse, last: str) -> None:
    """What the stream holds already, then what the process's stream hub hands on."""
    try:
        # Marks the job as listened to until the hub's first refresh takes over.
        events = await gen.jobs.events_since(job, last, listen_s=gen.hub.listen_ttl_s)
    except REDIS_DOWN:
        await resp.write(sse("error", REDIS_LOST))
        return
    if last == "0-0":
        events = after_last_reset(events)
    for ev in events:
        await resp.write(sse(ev.type, ev.data, ev.id))
        last = ev.id
        if ev.type in FINAL_EVENTS:
            return
    try:
        listener = await gen.hub.subscribe(job, last)
    except REDIS_DOWN:
        await resp.write(sse("error", REDIS_LOST))
        return
    try:
        while True:
            chunk, final = await listener.next()
            await resp.write(chunk)
            if final:
                return
    finally:
        gen.hub.unsubscribe(listener)
