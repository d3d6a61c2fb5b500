"""``typeahead worker``: runs generation jobs from the Redis queue.

Any number of workers may run, on any host, against one Redis. Each reads new jobs through
the consumer group, reclaims jobs left pending by dead workers, and keeps the jobs it is
working on fresh (so a slow job is not mistaken for a dead one). A job's entry is acknowledged
only after its result is stored, or after it failed for good (deadline, upstream error).
On a Redis Cluster the queue is several shards (``keys.Layout``): a worker reads each with
its own blocking reader and reclaims shard by shard.

With ``generate_cancel_unwatched`` on, one loop per worker checks the listeners keys of all
the jobs it is generating, once a second in one script call (one per shard), and cancels
those nobody has streamed or polled for ``generate_unwatched_grace_s``: the job is failed
("cancelled: nobody was listening") and its generation stopped the way a passed deadline
stops it, which closes the upstream LLM request. Pre-warm jobs are marked as never needing
a listener.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from typeahead import keys, logs, metrics
from typeahead.embed import Embedder
from typeahead.errors import ConfigError, TypeaheadError
from typeahead.generation.cache import SemanticCache, encode_result
from typeahead.generation.extractive import load_embedder
from typeahead.generation.grounding import Retriever, load_retriever
from typeahead.generation.llm import Backend, make_backend
from typeahead.generation.prompt import PROMPT_VERSION, Doc
from typeahead.generation.queue import REDIS_DOWN, Entry, Jobs, layout_for, let_send, open_redis
from typeahead.numbers import int_arg
from typeahead.settings import Settings

log = logging.getLogger("typeahead.worker")

# Passages a summary is grounded on: the best of CANDIDATE_PASSAGES re-ranked by their
# answer-bearing sentences (typeahead.retrieval.answers). Four rather than three: on held-out SQuAD
# questions the gold paragraph is among them 95-96% of the time instead of 94%.
DOCS_PER_SUMMARY = 4
SNIPPET_CHARS = 200
# The longest pause between two listener checks of the jobs a worker is generating.
LISTENER_CHECK_S = 1.0


def sources_of(docs: Sequence[Doc]) -> list[dict[str, Any]]:
    return [
        {"n": n, "id": d.id, "title": d.title, "snippet": d.text[:SNIPPET_CHARS], "score": d.score}
        for n, d in enumerate(docs, start=1)
    ]


class Superseded(Exception):
    """Another worker reclaimed this job: stop quietly and leave the entry to it."""


@dataclass(eq=False)
class Running:
    """One job this worker is generating: what the listener check needs to cancel it."""

    job: str
    attempt: int
    scope: asyncio.Timeout | None = None  # the deadline's; firing it early cancels the work
    unwatched: bool = False  # the job was failed for want of listeners

    def cancel(self) -> None:
        """Stop generating now, through the deadline's own cancellation path (which closes
        the upstream request). Only call it while the job is inside its scope."""
        scope = self.scope
        if scope is not None and not scope.expired():
            scope.reschedule(asyncio.get_running_loop().time())


class Worker:
    def __init__(
        self, jobs: Jobs, backend: Backend, retriever: Retriever, settings: Settings, *,
        name: str | None = None, concurrency: int = 4, semantic: SemanticCache | None = None,
    ) -> None:
        self.jobs = jobs
        self.backend = backend
        self.retriever = retriever
        self.settings = settings
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.semantic = semantic
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: set[Running] = set()  # jobs inside their deadline scope
        self.completed = 0
        self.cancelled_unwatched = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Read, reclaim and process jobs until ``stop`` is set."""
        helpers = [asyncio.create_task(self._reclaim_loop(stop))]
        if self.settings.generate_cancel_unwatched:
            helpers.append(asyncio.create_task(self._listener_loop(stop)))
        readers = [asyncio.create_task(self._read_loop(stop, shard))
                   for shard in range(self.jobs.layout.shards)]
        try:
            done, _ = await asyncio.wait(readers, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a reader's failure is the worker's
        finally:
            for task in [*readers, *helpers, *self._tasks]:
                task.cancel()
            await asyncio.gather(*readers, *helpers, *self._tasks, return_exceptions=True)

    async def _read_loop(self, stop: asyncio.Event, shard: int) -> None:
        """Read one queue shard. With one shard a slot is taken before the blocking read, so
        a busy worker leaves new jobs to others. With several, each shard's reader blocks
        without a slot (else a few readers would hold every slot while jobs wait in the
        other shards) and takes one for the entry it read, keeping the entry fresh
        meanwhile: a busy worker holds at most one waiting entry per shard."""
        reserve = self.jobs.layout.shards == 1
        group_ready = False
        while not stop.is_set():
            if reserve:
                await self._slots.acquire()
            try:
                if not group_ready:
                    await self.jobs.ensure_group(shard)
                    group_ready = True
                entries = await self.jobs.read(self.name, count=1, block_ms=500, shard=shard)
            except REDIS_DOWN as exc:
                if reserve:
                    self._slots.release()
                log.warning("redis unavailable (%s); retrying", exc)
                group_ready = False
                await _sleep_unless(stop, 0.5)
                continue
            except Exception as exc:
                if reserve:
                    self._slots.release()
                if "NOGROUP" not in str(exc):
                    raise
                group_ready = False  # Redis lost the group (restart): create it again
                continue
            if not entries and reserve:
                self._slots.release()
            for entry in entries:
                await self._take(entry, reserved=reserve)
            if entries:
                # Let the job send its start script before this loop's next XREADGROUP: the
                # job's round trip is on the way to the first token, the next read is not.
                await asyncio.sleep(0)

    async def _reclaim_loop(self, stop: asyncio.Event) -> None:
        idle = self.settings.job_claim_idle_s
        while not stop.is_set():
            await _sleep_unless(stop, max(idle / 2, 0.05))
            for shard in range(self.jobs.layout.shards):
                await self._reclaim_shard(shard, idle)

    async def _reclaim_shard(self, shard: int, idle: float) -> None:
        try:
            # Inline jobs of API processes that died go on the queue first, so that
            # this read or the next picks them up like any other entry.
            if requeued := await self.jobs.requeue_expired(count=16, shard=shard):
                log.info("queued %d inline jobs whose API process stopped renewing them",
                         requeued)
            claimed = await self.jobs.reclaim(self.name, min_idle_s=idle, count=4, shard=shard)
        except REDIS_DOWN:
            return
        except Exception as exc:
            log.debug("reclaim failed: %s", exc)
            return
        for entry in claimed:
            log.info("reclaimed job %s from a presumed-dead worker", entry.job)
            await self._take(entry, reserved=False)

    async def _listener_loop(self, stop: asyncio.Event) -> None:
        """Cancel the running jobs nobody listens to any more; one script call per period,
        none while this worker generates nothing."""
        period = min(LISTENER_CHECK_S, max(self.settings.generate_unwatched_grace_s / 2, 0.05))
        while not stop.is_set():
            await _sleep_unless(stop, period)
            running = [r for r in self._running if not r.unwatched]
            if not running:
                continue
            try:
                gone = await self.jobs.cancel_unwatched([(r.job, r.attempt) for r in running])
            except Exception as exc:  # Redis down or failing: the next period tries again
                log.debug("listener check failed: %s", exc)
                continue
            for run, cancelled in zip(running, gone, strict=True):
                if cancelled:
                    log.info("job %s: nobody is listening; cancelling it", run.job)
                    run.unwatched = True
                    if run in self._running:  # else it has left its scope meanwhile
                        run.cancel()

    async def _take(self, entry: Entry, *, reserved: bool) -> None:
        """Run an entry in a slot (``reserved``: one already taken for it), keeping it fresh
        while it waits for one."""
        heartbeat = asyncio.create_task(self._heartbeat(entry.id, entry.shard))
        if not reserved:
            try:
                await self._slots.acquire()
            except BaseException:
                heartbeat.cancel()
                raise
        task = asyncio.create_task(self._guarded(entry, heartbeat))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, item: Entry, heartbeat: asyncio.Task[None]) -> None:
        entry, job = item.id, item.job
        try:
            await self.process(entry, job, hint=item.query, shard=item.shard)
        except Superseded:
            log.info("job %s was reclaimed by another worker; dropping it", job)
        except REDIS_DOWN as exc:
            # The entry stays pending; it is reclaimed once Redis is back.
            log.warning("redis failed during job %s: %s", job, exc)
        finally:
            heartbeat.cancel()
            self._slots.release()

    async def _heartbeat(self, entry: str, shard: int) -> None:
        period = max(self.settings.job_claim_idle_s / 3, 0.05)
        while True:
            await asyncio.sleep(period)
            with contextlib.suppress(Exception):
                await self.jobs.touch(self.name, entry, shard)

    async def process(self, entry: str, job: str, *, hint: str = "",
                      shard: int | None = None) -> None:
        """Run one queue entry. ``hint``: the query the entry carries, if any; ``shard``:
        the queue shard it came from (None: the job's own)."""
        shard = self.jobs.layout.shard(job) if shard is None else shard
        if not job:
            await self.jobs.ack(entry, shard)
            return
        attempt, record, docs = await self._begin(job, hint)
        if attempt <= 0:
            await self.jobs.ack(entry, shard)  # done, failed or gone: nothing left to do
            return
        await self._attempt(entry, Running(job, attempt), record, docs)

    async def _attempt(
        self, entry: str | None, run: Running, record: dict[str, str], docs: Sequence[Doc],
    ) -> None:
        """Generate one started attempt to its end: stored, failed or cancelled, then the queue
        entry (if the job came from the queue) acknowledged."""
        started = time.perf_counter()
        try:
            result = await self._generate_within(run, record, docs)
        except Superseded:
            # A token refused because the listener check failed the job a moment before
            # it could stop the generation: cancelled, not superseded.
            if not await self._was_cancelled(run):
                raise
            await self._cancelled(entry, run, started)
            return
        except TimeoutError:
            if run.unwatched:  # already failed by the listener check
                await self._cancelled(entry, run, started)
                return
            metrics.get().job_done("deadline", time.perf_counter() - started)
            await self._fail(entry, run, "deadline exceeded while generating")
            return
        except TypeaheadError as exc:
            metrics.get().job_done("failed", time.perf_counter() - started)
            await self._fail(entry, run, exc.message)
            return
        if not await self._complete(run, result):
            if not await self._was_cancelled(run):  # else cancelled as the last piece came
                raise Superseded(run.job)
            await self._cancelled(entry, run, started)
            return
        metrics.get().job_done("done", time.perf_counter() - started)
        self.completed += 1
        await self._ack(entry, run.job)
        if self.semantic is not None:
            await self.semantic.add(run.job, record.get("query", ""))

    async def _ack(self, entry: str | None, job: str) -> None:
        if entry is not None:
            await self.jobs.ack(entry, self.jobs.layout.shard(job))

    async def _emit(self, run: Running, piece: str) -> None:
        """Store one generated piece as the attempt's next token event."""
        if not await self.jobs.token(run.job, run.attempt, piece):
            raise Superseded(run.job)

    async def _complete(self, run: Running, result: bytes) -> bool:
        """Store the result (and the done event); False when the attempt is no longer ours."""
        return await self.jobs.complete(run.job, run.attempt, result,
                                        cache_ttl_s=self.settings.cache_ttl_s)

    async def _begin(self, job: str, hint: str) -> tuple[int, dict[str, str], list[Doc]]:
        """Start the attempt and fetch the record (one round trip) and, while Redis answers,
        retrieve the grounding documents for the query the entry carries: the search is CPU
        work on this loop, so it overlaps the round trip instead of following it."""
        begin = asyncio.ensure_future(self.jobs.begin(
            job, self.name, cancel_unwatched=self.settings.generate_cancel_unwatched,
        ))
        docs: list[Doc] | None = None
        try:
            if hint:
                await let_send()  # the script goes out before the search holds the loop
                docs = self._search(hint)
            attempt, record = await begin
        finally:
            if not begin.done():
                begin.cancel()
        query = record.get("query", "")
        if attempt > 0 and (docs is None or query != hint):
            docs = self._search(query)
        return attempt, record, docs or []

    def _search(self, query: str) -> list[Doc]:
        return list(self.retriever.search(query, DOCS_PER_SUMMARY))

    async def _generate_within(
        self, run: Running, record: dict[str, str], docs: Sequence[Doc],
    ) -> bytes:
        """Generate until done, the deadline, or the listener check cancels the job."""
        remaining = float(record.get("deadline", 0)) - _now()
        self._running.add(run)
        try:
            async with asyncio.timeout(max(remaining, 0.001)) as scope:
                run.scope = scope
                return await self._generate(run, record.get("query", ""), docs)
        finally:
            self._running.discard(run)

    async def _was_cancelled(self, run: Running) -> bool:
        """Whether the listener check (of this worker or another) failed this attempt."""
        if run.unwatched:
            return True
        record = await self.jobs.record(run.job)
        return (record.get("attempt") == str(run.attempt) and record.get("status") == "failed"
                and record.get("error") == keys.UNWATCHED_ERROR)

    async def _cancelled(self, entry: str | None, run: Running, started: float) -> None:
        metrics.get().job_done("cancelled", time.perf_counter() - started)
        self.cancelled_unwatched += 1
        await self._ack(entry, run.job)

    async def _generate(self, run: Running, query: str, docs: Sequence[Doc]) -> bytes:
        parts: list[str] = []
        asked = time.perf_counter()
        async with contextlib.aclosing(self.backend.generate(query, docs)) as stream:
            async for piece in stream:
                if not parts:
                    metrics.get().first_token(self.backend.model_id, time.perf_counter() - asked)
                await self._emit(run, piece)
                parts.append(piece)
        return encode_result(
            run.job, query, "".join(parts).strip(), sources_of(docs), self.backend.model_id,
            PROMPT_VERSION,
        )

    async def _fail(self, entry: str | None, run: Running, message: str) -> None:
        log.warning("job %s failed: %s", run.job, message)
        if not await self.jobs.fail(run.job, run.attempt, message):
            raise Superseded(run.job)
        await self._ack(entry, run.job)


def _now() -> float:
    import time

    return time.time()


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


# --- command line ---------------------------------------------------------------------------


def add_parser(subparsers: Any, name: str) -> None:
    p = subparsers.add_parser(name, help="run a generation worker against REDIS_URL")
    p.add_argument("--index", type=Path, help="index directory (grounding documents in DIR/docs)")
    p.add_argument("--docs", type=Path, help="grounding documents with id, title and text "
                   "(JSONL, TSV, CSV, .gz ok, or Parquet), indexed in memory")
    p.add_argument("--concurrency", type=int_arg(), default=4, help="jobs processed at once")
    p.add_argument("--name", help="consumer name (default: host-pid)")
    p.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env(index_dir=args.index)
    if not settings.uses_redis:
        raise ConfigError("the worker needs REDIS_URL or REDIS_SENTINELS (the queue it reads)")
    if args.concurrency < 1:
        raise ConfigError("--concurrency must be >= 1")
    logs.configure(settings)
    embedder = load_embedder()
    retriever = load_retriever(settings.index_dir, args.docs, embedder)
    return await serve_worker(settings, make_backend(settings, embedder), retriever, embedder,
                              name=args.name, concurrency=args.concurrency)


def semantic_cache(
    settings: Settings, redis: aioredis.Redis, embedder: Embedder, model_id: str,
) -> SemanticCache | None:
    if not settings.semantic_cache:
        return None
    return SemanticCache(redis, embedder, f"{model_id}:{PROMPT_VERSION}",
                         settings.semantic_cache_threshold, layout=layout_for(settings))


async def serve_worker(
    settings: Settings, backend: Backend, retriever: Retriever, embedder: Embedder, *,
    name: str | None = None, concurrency: int = 4,
) -> int:
    redis = open_redis(settings, read_timeout_s=5.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    layout = layout_for(settings)
    worker = Worker(Jobs(redis, layout=layout), backend, retriever, settings, name=name,
                    concurrency=concurrency,
                    semantic=semantic_cache(settings, redis, embedder, backend.model_id))
    log.info("worker %s reading %s (%d shards; model %s)", worker.name, layout.queue(0),
             layout.shards, backend.model_id)
    sampler = asyncio.create_task(metrics.sample_forever("worker"))
    try:
        await worker.run(stop)
    finally:
        sampler.cancel()
        await backend.close()
        await redis.aclose()
    return 0
