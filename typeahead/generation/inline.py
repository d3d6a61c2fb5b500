"""Inline jobs: an API process runs the generation job it has just created itself.

Through the queue, the first token of a new job crosses about nine process boundaries: client,
API, Redis, worker, LLM, worker, Redis, API, client. Each is a wake-up on a busy machine, and
together they added 4-7 ms to the LLM's own time to first token. When the LLM is an HTTP server
(vLLM), the API process has nothing to compute for a job but a documents search and a prompt,
so it can run the job itself: the POST that creates the job claims it in the same Redis script
(``Jobs.submit(owner=...)``), the process calls the LLM at once, and each token goes straight
to this process's listeners (``StreamHub.publish``) while it is stored in Redis in the
background, in order, for listeners elsewhere and for late joiners. What is left on the way
to the first token: client, API, LLM, API, client.

The guarantees of the queue still hold:

* **Single-flight**: the claim is the same enqueue script; a second request joins the job.
* **A dead API process**: an inline job holds a lease (``keys.LEASES``; one set per shard on
  a cluster) that this process renews; a worker puts a job whose lease expired on the
  queue, and the next attempt resets the stream as for any reclaimed job. Its tokens are
  then refused to this process, so a stalled process that wakes up cannot write over the
  new attempt.
* **Deadline and nobody listening**: the worker's own code (this class extends it).
* **Bounded work**: at most ``generate_inline_jobs`` at once per process; beyond that, and
  with the extractive summariser (CPU work that would hold up the millisecond tier), jobs go
  through the queue.

The millisecond tier shares this process's event loop, so an inline job's one long piece of
CPU work, the grounding search (re-ranking a hundred-odd candidate sentences: 4-6 ms of pure
Python), runs on a thread of its own (``SEARCH_THREADS``), never on the loop: on the loop it
held every keystroke that arrived meanwhile, and at a few uncached jobs a second that was the
suggest p99 (docs/benchmarks.md, "With three LLM stand-ins, one killed mid-run"). The search is
Python holding the GIL, so the process also asks for a shorter GIL switch interval
(``GIL_SWITCH_S``): the loop waits at most that long for the GIL, not CPython's 5 ms. What
the search shares with the loop (the served documents index, the student and its word cache)
it reads, or changes one dict entry at a time, so neither side needs a lock.

Event ids: an inline attempt numbers its events ``<created ms>-1``, ``-2``, ... so that its
process can hand a token to its listeners under the id Redis will store it with, before Redis
has it. The enqueue script deleted the job's stream, and any later attempt (a worker's) gets
Redis's own ids, which are larger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from typeahead.generation.cache import SemanticCache
from typeahead.generation.grounding import Retriever
from typeahead.generation.hub import Hub
from typeahead.generation.llm import Backend
from typeahead.generation.prompt import Doc
from typeahead.generation.queue import REDIS_DOWN, Event, Jobs
from typeahead.generation.worker import Running, Superseded, Worker
from typeahead.settings import Settings

log = logging.getLogger("typeahead.inline")

T = TypeVar("T")
# How many existing jobs an API process remembers, to skip speculative searches for them.
EXISTING_MEMORY = 4096
# Grounding searches run one at a time, off the event loop (see the module docstring).
SEARCH_THREADS = 1
# While a search thread holds the GIL, the event loop waits this long at most before CPython
# hands the GIL over (its default is 5 ms, the whole suggest p99 budget).
GIL_SWITCH_S = 0.0005


class TokenWriter:
    """Stores an inline attempt's tokens in Redis in order, batching those that pile up while a
    write is in flight (one script call each batch, never one per token behind another)."""

    def __init__(self, jobs: Jobs, job: str, attempt: int) -> None:
        self.jobs = jobs
        self.job = job
        self.attempt = attempt
        self._pending: list[tuple[str, str]] = []
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self.refused = False  # the attempt is no longer this process's

    def add(self, event_id: str, piece: str) -> None:
        """Queue one token; raises what stopped an earlier write (a refusal: Superseded)."""
        self.check()
        self._pending.append((event_id, piece))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())

    def check(self) -> None:
        if self.refused:
            raise Superseded(self.job)
        if self._error is not None:
            raise self._error

    async def flush(self) -> None:
        """Wait until every queued token is stored (or a write failed: raised)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)
        self.check()

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _drain(self) -> None:
        try:
            while self._pending and not self.refused:
                batch, self._pending = self._pending, []
                if not await self.jobs.tokens_at(self.job, self.attempt, batch):
                    self.refused = True
        except Exception as exc:  # Redis failing: the attempt stops at its next token
            self._error = exc


@dataclass(eq=False)
class InlineRun(Running):
    """An attempt this process runs: its event numbering and its token writer."""

    base_ms: int = 0
    count: int = 0  # events numbered so far
    last_id: str = "0-0"  # the id of the last event handed to the listeners
    writer: TokenWriter | None = field(default=None, repr=False)

    def next_id(self) -> str:
        self.count += 1
        return f"{self.base_ms}-{self.count}"


class InlineRunner(Worker):
    """Runs the jobs this API process claims; see the module docstring."""

    def __init__(
        self, jobs: Jobs, backend: Backend, retriever: Retriever, settings: Settings,
        hub: Hub, *, semantic: SemanticCache | None = None,
    ) -> None:
        name = f"api-{socket.gethostname()}-{os.getpid()}"
        super().__init__(jobs, backend, retriever, settings, name=name,
                         concurrency=settings.generate_inline_jobs, semantic=semantic)
        self.hub = hub
        self._searcher = ThreadPoolExecutor(SEARCH_THREADS, thread_name_prefix="inline-search")
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_S))
        self.lease_s = settings.job_claim_idle_s
        self._free = settings.generate_inline_jobs
        self._leased: set[str] = set()
        # Jobs whose POST found them existing (running or answered): a repeat of one is not
        # worth a speculative documents search (see ``with_documents``).
        self._existing: dict[str, None] = {}

    # --- the API's side -----------------------------------------------------------------------

    def reserve(self) -> bool:
        """Take a slot for a job this process may create; False when all are busy."""
        if self._free <= 0:
            return False
        self._free -= 1
        return True

    def unreserve(self) -> None:
        """Give back a slot ``reserve`` took that no job used (the job existed already)."""
        self._free += 1

    def worth_prefetching(self, job: str) -> bool:
        """Whether to search the documents while the claim is in flight: not for a job this
        process recently found existing (a popular, cached question asked again)."""
        return job not in self._existing

    def existed(self, job: str) -> None:
        """The claim found the job running or answered: remember it (a bounded memory)."""
        self._existing[job] = None
        if len(self._existing) > EXISTING_MEMORY:
            del self._existing[next(iter(self._existing))]

    async def with_documents(self, query: str, claim: Awaitable[T]) -> tuple[T, list[Doc] | None]:
        """Await ``claim`` while searching the grounding documents for ``query``: the search
        overlaps the Redis round trip instead of following it (a new job's first token comes
        that much sooner; a job that existed wasted it)."""
        pending = asyncio.ensure_future(claim)
        try:
            try:
                docs: list[Doc] | None = await self.search(query)
            except Exception:  # the job searches again once it runs, and fails there if so
                docs = None
            return await pending, docs
        finally:
            if not pending.done():
                pending.cancel()

    async def search(self, query: str) -> list[Doc]:
        """The grounding documents for ``query``, searched on the search thread: the event
        loop goes on serving keystrokes meanwhile."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._searcher, self._search, query)

    def start(self, job: str, query: str, *, created: float, deadline: float,
              docs: list[Doc] | None = None) -> None:
        """Run a job claimed with a reserved slot; the slot is given back when it ends.
        ``docs``: its grounding documents, when already searched."""
        run = InlineRun(job, 1, base_ms=int(created * 1000))
        run.writer = TokenWriter(self.jobs, job, 1)
        self._leased.add(job)
        task = asyncio.create_task(self._run_claimed(run, query, deadline, docs))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_claimed(self, run: InlineRun, query: str, deadline: float,
                           docs: list[Doc] | None) -> None:
        try:
            if docs is None:
                docs = await self.search(query)
            record = {"query": query, "deadline": repr(deadline)}
            await self._attempt(None, run, record, docs)
        except Superseded:
            log.info("inline job %s was taken over by a worker; dropping it", run.job)
        except REDIS_DOWN as exc:
            # The lease lapses, and a worker retries the job once Redis is back.
            log.warning("redis failed during inline job %s: %s", run.job, exc)
        except Exception:
            log.exception("inline job %s failed unexpectedly; a worker will retry it", run.job)
        finally:
            self._leased.discard(run.job)
            self._free += 1
            if run.writer is not None:
                await run.writer.close()

    # --- the worker's hooks -------------------------------------------------------------------

    async def _emit(self, run: Running, piece: str) -> None:
        assert isinstance(run, InlineRun) and run.writer is not None
        run.writer.check()
        event_id = run.next_id()
        self.hub.publish(run.job, run.last_id, Event(event_id, "token", piece))
        run.last_id = event_id
        run.writer.add(event_id, piece)
        # Tokens often arrive several to a read; without this the whole burst would be parsed
        # and published before any stream gets to write the first one.
        await asyncio.sleep(0)

    async def _complete(self, run: Running, result: bytes) -> bool:
        assert isinstance(run, InlineRun) and run.writer is not None
        await run.writer.flush()
        event_id = run.next_id()
        if not await self.jobs.complete(run.job, run.attempt, result,
                                        cache_ttl_s=self.settings.cache_ttl_s,
                                        event_id=event_id):
            return False
        self.hub.publish(run.job, run.last_id, Event(event_id, "done", result.decode()))
        run.last_id = event_id
        self.existed(run.job)  # answered now: a repeat is a cache hit
        return True

    # --- lifetime -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Renew the leases of the running jobs (and, when on, cancel the unwatched ones) until
        ``stop``; then hand the jobs still running to the workers at once."""
        helpers = [asyncio.create_task(self._renew_loop(stop))]
        if self.settings.generate_cancel_unwatched:
            helpers.append(asyncio.create_task(self._listener_loop(stop)))
        try:
            await stop.wait()
        finally:
            leased = list(self._leased)
            for task in [*helpers, *self._tasks]:
                task.cancel()
            await asyncio.gather(*helpers, *self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.jobs.renew(leased, 0.0)  # expired now: the next reclaim takes them
            self._searcher.shutdown(wait=False, cancel_futures=True)

    async def _renew_loop(self, stop: asyncio.Event) -> None:
        period = max(self.lease_s / 3, 0.05)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period)
            if self._leased and not stop.is_set():
                try:
                    await self.jobs.renew(list(self._leased), self.lease_s)
                except Exception as exc:  # Redis down: the next period tries again
                    log.debug("lease renewal failed: %s", exc)
