"""The open-loop scheduler: one event loop per process, ``--procs N`` processes in all.

The scheduler walks the plan and launches each request as its own task at its intended time,
never waiting for earlier requests. Each task records the generator's own lag (actual start
minus intended start) in a separate histogram; a lagging generator invalidates the run.
Requests that would exceed ``max_in_flight`` are not sent and count as ``dropped`` errors.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import multiprocessing as mp
import queue
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from loadtest.client import Client, Target
from loadtest.errors import LoadtestError
from loadtest.http1 import Pools
from loadtest.stats import Stats
from loadtest.timer import make_waker
from loadtest.workload import Planned, Workload

# How many timeline buckets the latency-over-time plot gets at most.
_MAX_BUCKETS = 120
# Children get this long after all of them are ready before the shared start.
_START_MARGIN_S = 0.3
_CHILD_START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class RunConfig:
    target: Target
    workload: Workload
    rate: float
    duration: float
    arrival: str = "poisson"
    seed: int = 0
    max_in_flight: int = 1000  # per process
    timeout_s: float = 10.0  # per HTTP request
    drain_s: float = 10.0  # after the last send, how long unfinished requests may take
    procs: int = 1
    timer: str = "auto"  # how the scheduler wakes up: loadtest.timer.TIMERS
    spin_us: float = 0.0  # the sleep timer's final spin

    @property
    def bucket_s(self) -> float:
        return float(max(1, math.ceil(self.duration / _MAX_BUCKETS)))


Prepared = tuple[Planned | None, Iterator[Planned]]


def prepare(cfg: RunConfig, stream: int = 0) -> Prepared:
    """This process's plan, with its first entry drawn so that set-up cost (calibrating the
    sessions) is paid before the clock starts."""
    plan = cfg.workload.plan(cfg.rate / cfg.procs, cfg.duration, cfg.arrival, cfg.seed, stream)
    return next(plan, None), plan


async def run_one(
    cfg: RunConfig, prepared: Prepared | None = None, start_epoch: float | None = None
) -> Stats:
    """This process's share (``rate / procs``) of the run; starts at ``start_epoch`` if given."""
    stats = Stats(cfg.bucket_s)
    first, plan = prepared if prepared is not None else prepare(cfg)
    wait = 0.05 if start_epoch is None else max(0.0, start_epoch - time.time())
    # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds.
    t0 = time.perf_counter() + wait
    connector = aiohttp.TCPConnector(limit=0, force_close=False, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
    pools = Pools() if cfg.target.client == "lean" else None
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        client = Client(session, cfg.target, stats, t0, pools=pools, timeout_s=cfg.timeout_s)
        tasks: dict[asyncio.Task[None], str] = {}
        try:
            if first is not None:
                await _schedule(client, cfg, tasks, itertools.chain((first,), plan))
            await _drain(tasks, cfg.drain_s, stats)
        finally:
            if pools is not None:
                pools.close()
    return stats


async def _schedule(
    client: Client, cfg: RunConfig, tasks: dict[asyncio.Task[None], str], plan: Iterator[Planned]
) -> None:
    """Launches every planned request at its intended time, never waiting for answers."""
    t0 = client.t0
    waker = make_waker(cfg.timer, asyncio.get_running_loop(), cfg.spin_us)
    try:
        for offset, kind, payload in plan:
            intended = t0 + offset
            # Requests whose time has passed when we wake are launched back to back in this
            # wake-up; the waker never spins through the loop (see loadtest.timer).
            if intended > time.perf_counter():
                await waker.wait_until(intended)
            _launch(client, cfg, tasks, intended, kind, payload)
    finally:
        waker.close()


def _launch(
    client: Client,
    cfg: RunConfig,
    tasks: dict[asyncio.Task[None], str],
    intended: float,
    kind: str,
    payload: str,
) -> None:
    client.stats.scheduled += 1
    if client.in_flight >= cfg.max_in_flight:
        client.stats.record_error(kind, "dropped")
        return
    client.in_flight += 1
    task = asyncio.get_running_loop().create_task(client.send(intended, kind, payload))
    tasks[task] = kind
    task.add_done_callback(tasks.pop)


async def _drain(tasks: dict[asyncio.Task[None], str], drain_s: float, stats: Stats) -> None:
    if not tasks:
        return
    kinds = dict(tasks)
    _, pending = await asyncio.wait(set(kinds), timeout=drain_s)
    for task in pending:
        task.cancel()
        # Still out when the run ended: counted, never silently left behind.
        stats.record_error(kinds[task], "unfinished")
    if pending:
        await asyncio.wait(pending)


def run_loop(coro_factory: Callable[[], Coroutine[Any, Any, Stats]]) -> Stats:
    """Runs a coroutine on uvloop where available (lower per-request overhead)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro_factory())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro_factory())


def execute(cfg: RunConfig) -> Stats:
    """The whole run: in this process, or spread over ``cfg.procs`` processes and merged."""
    if cfg.procs <= 1:
        prepared = prepare(cfg)
        return run_loop(lambda: run_one(cfg, prepared))
    return _run_processes(cfg)


def _run_processes(cfg: RunConfig) -> Stats:
    ctx = mp.get_context("spawn")
    results: Any = ctx.Queue()
    ready: Any = ctx.Queue()
    go: Any = ctx.Queue()
    children = [
        ctx.Process(target=_child, args=(cfg, i, ready, go, results), daemon=True)
        for i in range(cfg.procs)
    ]
    for child in children:
        child.start()
    try:
        _wait_ready(ready, cfg.procs)
        start_epoch = time.time() + _START_MARGIN_S
        for _ in children:
            go.put(start_epoch)
        merged = Stats(cfg.bucket_s)
        for _ in children:
            merged.merge_encoded(_result(results, cfg))
        return merged
    finally:
        for child in children:
            child.join(timeout=5)
            if child.is_alive():
                child.terminate()


def _wait_ready(ready: Any, count: int) -> None:
    for _ in range(count):
        try:
            status = ready.get(timeout=_CHILD_START_TIMEOUT_S)
        except queue.Empty:
            raise LoadtestError("a load generator process did not start") from None
        if status != "ready":
            raise LoadtestError(f"a load generator process failed: {status}")


def _result(results: Any, cfg: RunConfig) -> dict[str, Any]:
    budget = cfg.duration + cfg.drain_s + _CHILD_START_TIMEOUT_S
    try:
        kind, payload = results.get(timeout=budget)
    except queue.Empty:
        raise LoadtestError("a load generator process did not report back") from None
    if kind != "ok":
        raise LoadtestError(f"a load generator process failed: {payload}")
    assert isinstance(payload, dict)
    return payload


def _child(cfg: RunConfig, stream: int, ready: Any, go: Any, results: Any) -> None:
    """Entry point of a generator process: report ready, wait for the shared start, run."""
    try:
        prepared = prepare(cfg, stream)
        ready.put("ready")
        start_epoch = go.get()
        stats = run_loop(lambda: run_one(cfg, prepared, start_epoch))
        results.put(("ok", stats.encode()))
    except BaseException as exc:  # reported to the parent, which prints one line
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        ready.put(message)  # unblocks a parent still waiting for this child to be ready
        results.put(("error", message))
