"""The fault-injection scenarios. Each breaks one thing under the steady suggest load and
records rows (scenario, what was checked, result, figures) and the time window whose suggest
latencies are judged afterwards, when the load process has written its records."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from chaos.stack import LOCAL, Stack, api_pids, descendants, rss_mb
from typeahead import keys
from typeahead.generation.queue import Jobs
from typeahead.process_tree import alive
from typeahead.sse import Parser, read_events

STREAMS_PER_S = 100


@dataclass
class Row:
    scenario: str
    checked: str
    ok: bool
    figures: str


@dataclass
class Config:
    quick: bool = False
    outage_s: float = 10.0
    jobs: int = 8
    sse_streams: int = 1000
    slow_clients: int = 100
    hold_s: float = 8.0
    # /v1/generate must answer 503 this fast while Redis is down or stopped: the API's Redis
    # timeout (90 ms) plus the request's own time.
    refuse_ms: float = 100.0


@dataclass
class Run:
    stack: Stack
    cfg: Config
    session: aiohttp.ClientSession
    rows: list[Row] = field(default_factory=list)
    windows: list[tuple[str, float, float, bool]] = field(default_factory=list)  # name, t0, t1

    def row(self, scenario: str, checked: str, ok: bool, figures: str) -> None:
        self.rows.append(Row(scenario, checked, ok, figures))
        print(f"  [{'PASS' if ok else 'FAIL'}] {scenario}: {checked} ({figures})", flush=True)

    def window(self, name: str, t0: float, t1: float, *, errors_allowed: bool = False) -> None:
        self.windows.append((name, t0, t1, errors_allowed))


# --- helpers ----------------------------------------------------------------------------------


async def post_generate(session: aiohttp.ClientSession, base: str, query: str
                        ) -> tuple[int, float, dict[str, Any]]:
    started = time.perf_counter()
    try:
        async with session.post(base + "/v1/generate", json={"query": query}) as resp:
            body = await resp.json(content_type=None)
            return resp.status, time.perf_counter() - started, body
    except (aiohttp.ClientError, TimeoutError) as exc:
        return 0, time.perf_counter() - started, {"error": str(exc)}


def unique(tag: str) -> str:
    return f"chaos {tag} {uuid.uuid4().hex[:8]}"


async def job_records(jobs: Jobs, ids: list[str]) -> dict[str, dict[str, str]]:
    return {job: await jobs.record(job) for job in ids}


async def wait_final(jobs: Jobs, ids: list[str], timeout: float
                     ) -> tuple[dict[str, dict[str, str]], dict[str, float]]:
    """Poll until every job is done or failed; returns the records and when each ended."""
    started, ended = time.monotonic(), dict[str, float]()
    records: dict[str, dict[str, str]] = {}
    while time.monotonic() - started < timeout:
        records = await job_records(jobs, ids)
        for job, rec in records.items():
            if rec.get("status") in ("done", "failed") and job not in ended:
                ended[job] = time.monotonic() - started
        if len(ended) == len(ids):
            break
        await asyncio.sleep(0.1)
    return records, ended


async def submit(run: Run, tag: str, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        status, _, body = await post_generate(run.session, run.stack.base, unique(tag))
        if status == 202:
            ids.append(body["id"])
    return ids


def store(stack: Stack) -> Jobs:
    """The job protocol on the stack's store (one Redis or the cluster), keys where the API
    and the workers put them; ``close`` when done."""
    redis, layout = stack.store()
    return Jobs(redis, layout=layout)


async def close(jobs: Jobs) -> None:
    await jobs.redis.aclose()


# --- 1. Redis outage --------------------------------------------------------------------------


async def redis_outage(run: Run) -> None:
    name, stack = "redis outage", run.stack
    assert stack.redis is not None
    stack.standin.mode, stack.standin.token_delay_s = "ok", 0.3  # jobs in flight at the stop
    inflight = await submit(run, "before-outage", 3)
    await asyncio.sleep(0.5)
    stack.redis.stop()
    t0 = time.time()
    probes: list[tuple[int, float]] = []
    while time.time() - t0 < run.cfg.outage_s:
        status, took, _ = await post_generate(run.session, stack.base, unique("outage"))
        probes.append((status, took))
        await asyncio.sleep(0.25)
    t1 = time.time()
    stack.redis.start()  # blocks until it accepts connections; recovery counts from t1
    recovered = await _recovery_time(run, since=t1)
    run.window(name, t0, t1)
    codes = {s for s, _ in probes}
    worst = max(t for _, t in probes) * 1000
    refused = codes == {503} and worst < run.cfg.refuse_ms
    run.row(name, f"/v1/generate answers 503 within {run.cfg.refuse_ms:.0f} ms while Redis is "
                  f"down ({run.cfg.outage_s:.0f} s)", refused,
            f"{len(probes)} probes, statuses {sorted(codes)}, max {worst:.1f} ms")
    run.row(name, "/v1/generate serves within 5 s of Redis returning, no restart",
            recovered is not None and recovered < 5.0,
            f"first 2xx after {recovered:.2f} s" if recovered is not None else "never")
    jobs = store(stack)
    records, _ = await wait_final(jobs, inflight, 20.0)
    await close(jobs)
    ended = [r for r in records.values()
             if r.get("status") == "done" or (r.get("status") == "failed" and r.get("error"))]
    outcome = sorted(f"{r['status']}: {r.get('error', 'ok')[:40]}" for r in ended)
    run.row(name, "jobs accepted before the outage are not lost: each ends done, or failed "
                  "with its error (deadline)", len(ended) == len(inflight) == 3,
            f"{len(ended)}/{len(inflight)} ended ({'; '.join(outcome)}); attempts "
            f"{sorted(int(r.get('attempt', 0)) for r in records.values())}")
    stack.standin.token_delay_s = 0.0


async def _recovery_time(run: Run, since: float, limit: float = 15.0) -> float | None:
    while time.time() - since < limit:
        status, _, _ = await post_generate(run.session, run.stack.base, unique("recovery"))
        if status in (200, 202):
            return time.time() - since
        await asyncio.sleep(0.1)
    return None


# --- 2. a worker killed mid-job ---------------------------------------------------------------


async def worker_kill(run: Run) -> None:
    name, stack = "worker SIGKILL", run.stack
    stack.standin.mode, stack.standin.token_delay_s = "ok", 0.15
    calls_before = stack.standin.calls
    t0 = time.time()
    ids = await submit(run, "kill", run.cfg.jobs)
    await asyncio.sleep(0.6)
    victim = next(iter(stack.workers))
    stack.kill_worker(victim)
    jobs = store(stack)
    records, ended = await wait_final(jobs, ids, 30.0)
    pending = await jobs.depth()
    await close(jobs)
    stack.start_worker(victim + "-restarted")
    run.window(name, t0, time.time())
    done = sum(r.get("status") == "done" for r in records.values())
    completions = [int(r.get("completions", 0)) for r in records.values()]
    reclaimed = sum(int(r.get("attempt", 0)) > 1 for r in records.values())
    run.row(name, "every accepted job completes (0 lost)", done == len(ids) == run.cfg.jobs,
            f"{len(ids)} accepted, {done} done, {len(ids) - done} lost, {reclaimed} reclaimed "
            f"from the dead worker, queue left {pending}, all done in "
            f"{max(ended.values(), default=0):.1f} s")
    run.row(name, "no job runs to completion twice", max(completions, default=0) == 1,
            f"completions per job: max {max(completions, default=0)}; LLM calls "
            f"{stack.standin.calls - calls_before} for {len(ids)} jobs")
    stack.standin.token_delay_s = 0.0


# --- 3. the LLM stalls or drops connections -------------------------------------------------


async def llm_faults(run: Run) -> None:
    name, stack = "LLM stall / drop", run.stack
    t0 = time.time()
    for mode in ("stall", "drop"):
        stack.standin.mode = mode
        ids = await submit(run, mode, 3)
        jobs = store(stack)
        records, ended = await wait_final(jobs, ids, stack.job_deadline_s + 10)
        await close(jobs)
        failed = [r for r in records.values() if r.get("status") == "failed" and r.get("error")]
        slowest = max(ended.values(), default=float("inf"))
        limit = stack.job_deadline_s + 1.5
        errors = sorted({r["error"][:60] for r in failed})
        run.row(name, f"{mode}: each job fails with its error by its deadline "
                      f"({stack.job_deadline_s:.0f} s)",
                len(failed) == len(ids) == 3 and slowest <= limit,
                f"{len(failed)}/{len(ids)} failed, slowest after {slowest:.1f} s; {errors}")
    stack.standin.mode = "ok"
    run.window(name, t0, time.time())


# --- 4. an API process killed -----------------------------------------------------------------


async def api_kill(run: Run) -> None:
    """Kill the API process that runs the most inline jobs: the supervisor restarts it, and a
    worker takes its jobs over once their leases lapse."""
    name, stack = "API process SIGKILL", run.stack
    before = await api_pids(stack.base)
    if len(before) < 2:
        run.row(name, "find the API processes", False, f"saw pids {sorted(before)}")
        return
    stack.standin.mode, stack.standin.token_delay_s = "ok", 0.15
    ids = await submit_spread(run, "apikill", run.cfg.jobs)
    jobs = store(stack)
    owners = {job: r.get("worker", "") for job, r in (await job_records(jobs, ids)).items()}
    victim = _busiest(owners, before)
    on_victim = [job for job, owner in owners.items() if owner.endswith(f"-{victim}")]
    t0 = time.time()
    os.kill(victim, signal.SIGKILL)
    restarted = None
    while time.time() - t0 < 20:
        now = await api_pids(stack.base, tries=6)
        if now - before:
            restarted = time.time() - t0
            break
        await asyncio.sleep(0.2)
    records, ended = await wait_final(jobs, ids, 30.0)
    await close(jobs)
    stack.standin.token_delay_s = 0.0
    await asyncio.sleep(1.0)
    run.window(name, t0, time.time(), errors_allowed=True)
    run.row(name, "the supervisor restarts the killed process",
            restarted is not None,
            f"pid {victim} killed; new process serving after {restarted:.2f} s"
            if restarted is not None else "no new process in 20 s")
    done = [job for job in ids if records.get(job, {}).get("status") == "done"]
    taken = [job for job in on_victim if int(records.get(job, {}).get("attempt", 0)) > 1]
    completions = [int(r.get("completions", 0)) for r in records.values()]
    run.row(name, "its inline jobs are taken over and every accepted job completes once",
            len(done) == len(ids) and len(taken) == len(on_victim) and bool(on_victim)
            and max(completions, default=0) == 1,
            f"{len(ids)} accepted, {len(on_victim)} running inline in the killed process, "
            f"{len(taken)} of those finished by a worker; {len(done)} done, completions per "
            f"job max {max(completions, default=0)}, all done in "
            f"{max(ended.values(), default=0):.1f} s")


async def submit_spread(run: Run, tag: str, n: int) -> list[str]:
    """Like ``submit``, each on a new connection, so the jobs land on every API process."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        answers = [await post_generate(session, run.stack.base, unique(tag)) for _ in range(n)]
    return [body["id"] for status, _, body in answers if status == 202]


def _busiest(owners: dict[str, str], pids: set[int]) -> int:
    """The API process (pid) that runs the most of these jobs inline."""
    counts = {pid: sum(owner.endswith(f"-{pid}") and owner.startswith("api-")
                       for owner in owners.values()) for pid in pids}
    return max(sorted(pids), key=lambda pid: counts[pid])


# --- 5. slow clients and idle event streams ---------------------------------------------------


async def slow_clients(run: Run) -> None:
    name, stack, cfg = "slow clients + idle SSE", run.stack, run.cfg
    pids = await api_pids(stack.base)
    rss_before = sum(rss_mb(p) for p in pids)
    job = uuid.uuid4().hex
    jobs = store(stack)
    redis, record = jobs.redis, jobs.layout.job(job)
    # A job nobody works on (not in the queue), far from its deadline: its streams stay idle.
    await redis.hset(record, mapping={
        "id": job, "query": "idle", "status": "queued", "created": time.time(),
        "deadline": time.time() + 3600, "attempt": 0, "completions": 0})
    stop = asyncio.Event()
    counts = {"keepalives": 0, "open": 0, "ended": 0, "refused": 0}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as streams:
        url = f"{stack.base}/v1/generate/{job}/stream"
        t0 = time.time()
        lorises = [asyncio.create_task(_slowloris(i, stack.api_port, stop))
                   for i in range(cfg.slow_clients)]
        readers = []
        for n in range(cfg.sse_streams):  # users arrive at STREAMS_PER_S, not all at once
            readers.append(asyncio.create_task(_idle_stream(streams, url, stop, counts)))
            await asyncio.sleep(max(0.0, t0 + (n + 1) / STREAMS_PER_S - time.time()))
        await _wait_until(lambda: counts["open"] + counts["refused"] >= cfg.sse_streams, 30.0)
        opened_in = time.time() - t0
        gen_probe = await _cached_generate_latency(run)
        await asyncio.sleep(cfg.hold_s)
        rss_during = sum(rss_mb(p) for p in pids)
        clients = _clients(await redis.info("clients"))
        still_open = counts["open"] - counts["ended"]
        t1 = time.time()
        stop.set()
        await redis.delete(record)
        await asyncio.gather(*readers, *lorises, return_exceptions=True)
    await close(jobs)
    run.window(name, t0, t1)
    run.row(name, f"{cfg.sse_streams} idle SSE streams stay open with keep-alives",
            still_open == cfg.sse_streams,
            f"opened at {STREAMS_PER_S}/s in {opened_in:.1f} s, {counts['refused']} refused, "
            f"{still_open} open after {cfg.hold_s:.0f} s more, "
            f"{counts['keepalives']} keep-alives, Redis clients {clients}; ended early: "
            f"{_ends(counts)}")
    run.row(name, f"{cfg.slow_clients} slowloris + slow-body clients: cached generate still "
                  f"fast", gen_probe is not None and gen_probe < 0.1,
            f"cached POST /v1/generate {gen_probe * 1000:.1f} ms" if gen_probe else "failed")
    growth = rss_during - rss_before
    run.row(name, "API memory stays bounded (< 300 MB growth for all processes)",
            growth < 300, f"RSS {rss_before:.0f} MB -> {rss_during:.0f} MB over {len(pids)} "
                          f"processes (+{growth / max(cfg.sse_streams, 1) * 1024:.0f} KB/stream)")


def _clients(info: dict[str, Any]) -> int:
    """Connected clients: of the one Redis, or summed over a cluster's nodes (a cluster
    client answers INFO with one reply per node)."""
    if "connected_clients" in info:
        return int(info["connected_clients"])
    return sum(int(node.get("connected_clients", 0)) for node in info.values()
               if isinstance(node, dict))


def _ends(counts: dict[str, int]) -> str:
    ends = {k: v for k, v in counts.items() if k.startswith("error: ")}
    return orjson.dumps(ends).decode() if ends else "none"


async def _idle_stream(session: aiohttp.ClientSession, url: str, stop: asyncio.Event,
                       counts: dict[str, int]) -> None:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, asyncio.CancelledError):
        async with session.get(url) as resp:
            if resp.status != 200:
                counts["refused"] += 1
                return
            counts["open"] += 1
            parser = Parser()
            try:
                while not stop.is_set():
                    line = await asyncio.wait_for(resp.content.readline(), 3.0)
                    if not line:
                        return
                    comments = parser.comments
                    event = parser.feed(line)
                    counts["keepalives"] += parser.comments - comments
                    if event is not None:
                        key = "error: " + event.data[:40].strip()
                        counts[key] = counts.get(key, 0) + 1
                        return
            finally:
                counts["ended"] += 1


async def _slowloris(i: int, port: int, stop: asyncio.Event) -> None:
    """Half the clients trickle header lines, half trickle a declared JSON body."""
    with contextlib.suppress(OSError, asyncio.CancelledError):
        reader, writer = await asyncio.open_connection(LOCAL, port)
        if i % 2:
            writer.write(b"GET /v1/suggest?q=new HTTP/1.1\r\nHost: x\r\n")
            line = b"X-Slow: 1\r\n"
        else:
            writer.write(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 4000\r\n\r\n"
                         b'{"query": "')
            line = b"a"
        while not stop.is_set():
            writer.write(line)
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        writer.transport.abort()
        del reader


async def _cached_generate_latency(run: Run) -> float | None:
    query = "chaos cached question"
    for _ in range(50):  # make it cached first
        status, _, _ = await post_generate(run.session, run.stack.base, query)
        if status == 200:
            break
        await asyncio.sleep(0.2)
    took = []
    for _ in range(10):
        status, t, _ = await post_generate(run.session, run.stack.base, query)
        if status != 200:
            return None
        took.append(t)
    return sorted(took)[-1]


# --- 6. a Redis stall (SIGSTOP): streams wait it out, generate fails fast ----------------------


async def redis_stall(run: Run) -> None:
    name, stack = "redis stall", run.stack
    assert stack.redis is not None and stack.redis.proc is not None
    stall_s = 4.0 if run.cfg.quick else 8.0
    stack.standin.mode, stack.standin.token_delay_s = "ok", 0.2
    ids = await submit(run, "stall", 4)
    ends: dict[str, str] = {}
    readers = [asyncio.create_task(_stream_end(run.session, stack.base, job, ends))
               for job in ids]
    await asyncio.sleep(0.5)
    stack.redis.proc.send_signal(signal.SIGSTOP)
    t0 = time.time()
    probes: list[tuple[int, float]] = []
    while time.time() - t0 < stall_s:
        status, took, _ = await post_generate(run.session, stack.base, unique("stall"))
        probes.append((status, took))
        await asyncio.sleep(0.25)
    ended_during = dict(ends)
    stack.redis.proc.send_signal(signal.SIGCONT)
    t1 = time.time()
    _, pending = await asyncio.wait(readers, timeout=30)
    for task in pending:
        task.cancel()
    for job in ids:
        ends.setdefault(job, "still open 30 s after the stall")
    stack.standin.token_delay_s = 0.0
    run.window(name, t0, t1)
    codes, worst = {st for st, _ in probes}, max(t for _, t in probes) * 1000
    refused = codes == {503} and worst < run.cfg.refuse_ms
    run.row(name, f"/v1/generate answers 503 within {run.cfg.refuse_ms:.0f} ms while Redis is "
                  f"stopped (SIGSTOP {stall_s:.0f} s)", refused,
            f"{len(probes)} probes, statuses {sorted(codes)}, max {worst:.1f} ms")
    lost = [e for e in ends.values() if "unreachable" in e]
    run.row(name, "open event streams survive the stall (none ends while Redis is stopped, "
                  "none with 'unreachable')", bool(ids) and not ended_during and not lost,
            f"{len(ids)} streams; ended during the stall {len(ended_during)}; ends after: "
            f"{orjson.dumps(_count(ends.values())).decode()}")


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


async def _stream_end(session: aiohttp.ClientSession, base: str, job: str,
                      ends: dict[str, str]) -> None:
    """Follow a job's event stream; record how it ended ("done", or "error: <message>")."""
    url = f"{base}/v1/generate/{job}/stream"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=60)) as resp:
            async for event in read_events(resp.content):
                if event.event in ("done", "error"):
                    ends[job] = "done" if event.event == "done" else f"error: {event.data[:54]}"
                    return
        ends[job] = "closed"
    except (aiohttp.ClientError, TimeoutError) as exc:
        ends[job] = f"client error: {type(exc).__name__}"


# --- 7. the serve supervisor killed with SIGKILL (run last: it replaces the API) --------------


async def supervisor_kill(run: Run) -> None:
    name, stack = "supervisor SIGKILL", run.stack
    assert stack.api is not None
    children = descendants(stack.api.pid)
    t0 = time.time()
    stack.api.send_signal(signal.SIGKILL)
    stack.api.wait(10)
    left = set(children)
    while left and time.time() - t0 < 5.0:
        left = {pid for pid in left if alive(pid)}
        await asyncio.sleep(0.05)
    gone_after = time.time() - t0
    run.row(name, "its API workers die with it (within 5 s)", bool(children) and not left,
            f"{len(children)} children; " + (f"all gone after {gone_after:.2f} s" if not left
                                              else f"still running: {sorted(left)}"))
    stack.api = stack._spawn("api-restarted", stack.api_args())
    try:
        await stack.wait_ready(60.0)
        ok, figures = True, f"serving {time.time() - t0:.1f} s after the kill"
    except RuntimeError as exc:
        ok, figures = False, str(exc)[:80]
    # No suggest window here: the whole API is down until the new supervisor serves.
    run.row(name, "a new supervisor starts on the port and serves", ok, figures)


# --- 8. a Redis Cluster primary killed under load (--redis-cluster) ---------------------------


async def primary_kill(run: Run) -> None:
    """SIGKILL the primary of queue shard 0's slot while Generate clicks arrive one after
    another (and the suggest load runs): its replica is promoted, every job the API accepted
    (202) ends done, and new jobs in the dead primary's shards run on the promoted replica.
    The killed node is then started again and rejoins as a replica."""
    name, stack, cluster = "primary SIGKILL", run.stack, run.stack.cluster
    assert cluster is not None
    stack.standin.mode, stack.standin.token_delay_s = "ok", 0.02
    jobs = store(stack)
    layout = jobs.layout
    victim = await asyncio.to_thread(cluster.primary_of, layout.slot(0))
    replica = await asyncio.to_thread(cluster.replica_of, victim)
    owners = [await asyncio.to_thread(cluster.primary_of, layout.slot(shard))
              for shard in range(layout.shards)]
    lost_shards = {shard for shard, node in enumerate(owners) if node is victim}
    posts: list[tuple[float, int, str]] = []  # (monotonic time, status, job id)
    stop = asyncio.Event()
    t0 = time.time()
    poster = asyncio.create_task(_post_until(run, stop, posts))
    await asyncio.sleep(2.0)
    killed = time.monotonic()
    await asyncio.to_thread(victim.kill)
    promoted = await _wait_for(lambda: cluster.is_primary(replica) and cluster.ready(), 30.0)
    await asyncio.sleep(3.0 if run.cfg.quick else 6.0)  # clicks keep coming after it
    stop.set()
    await poster
    t1 = time.time()
    accepted = [job for _, status, job in posts if status == 202]
    records, ended = await wait_final(jobs, accepted, 30.0)
    await close(jobs)
    restarted = time.monotonic()
    await asyncio.to_thread(victim.start)  # its nodes.conf makes it rejoin the cluster
    rejoined = await _wait_for(lambda: not cluster.is_primary(victim) and cluster.ready(), 30.0)
    stack.standin.token_delay_s = 0.0
    run.window(name, t0, t1)
    run.row(name, "the replica of the killed primary is promoted; the node, restarted, "
                  "rejoins as a replica", promoted is not None and rejoined is not None,
            f"shards {sorted(lost_shards)} of {layout.shards} on the killed primary; "
            + (f"promoted {promoted - killed:.2f} s after the kill" if promoted else
               "no promotion in 30 s")
            + (f", rejoined {rejoined - restarted:.2f} s after its restart" if rejoined
               else ", did not rejoin in 30 s"))
    _primary_jobs_rows(run, name, posts, records, ended, layout, lost_shards, killed)
    _resumed_row(run, name, posts, records, layout, lost_shards, promoted)


async def _post_until(run: Run, stop: asyncio.Event, out: list[tuple[float, int, str]]) -> None:
    """Unique questions, one after another with a short pause: status and id of each."""
    while not stop.is_set():
        status, _, body = await post_generate(run.session, run.stack.base, unique("failover"))
        out.append((time.monotonic(), status, str(body.get("id", "")) if status == 202 else ""))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


async def _wait_for(check: Callable[[], bool], timeout: float) -> float | None:
    """When (monotonic) ``check`` first held, polled in a thread (it runs redis-cli)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return time.monotonic()
        await asyncio.sleep(0.1)
    return None


def _primary_jobs_rows(run: Run, name: str, posts: list[tuple[float, int, str]],
                       records: dict[str, dict[str, str]], ended: dict[str, float],
                       layout: keys.Layout, lost_shards: set[int], killed: float) -> None:
    accepted = [job for _, status, job in posts if status == 202]
    done = [job for job in accepted if records.get(job, {}).get("status") == "done"]
    failed = sorted({records[job].get("error", "")[:50] for job in accepted
                     if records.get(job, {}).get("status") == "failed"})
    missing = sum(not records.get(job) for job in accepted)
    in_lost = sum(layout.shard(job) in lost_shards for job in accepted)
    statuses = _count(str(status) for _, status, _ in posts)
    run.row(name, "every accepted job completes (0 acknowledged jobs lost)",
            bool(accepted) and in_lost > 0 and len(done) == len(accepted),
            f"{len(posts)} POSTs, {len(accepted)} accepted ({in_lost} in the killed primary's "
            f"shards), {len(done)} done, {len(accepted) - len(done)} lost ({missing} without a "
            f"record, failed: {failed or 'none'}), all ended "
            f"{max(ended.values(), default=0):.1f} s after the load")
    refused = [t - killed for t, status, _ in posts if status == 503]
    when = (f"; the 503s {min(refused):.2f} to {max(refused):.2f} s after the kill"
            if refused else "")
    run.row(name, "/v1/generate answers 202, or 503 while a shard has no primary (nothing else)",
            set(statuses) <= {"202", "503"}, f"statuses {orjson.dumps(statuses).decode()}{when}")


def _resumed_row(run: Run, name: str, posts: list[tuple[float, int, str]],
                 records: dict[str, dict[str, str]], layout: keys.Layout,
                 lost_shards: set[int], promoted: float | None) -> None:
    """Generation resumes on the dead primary's shards: the first job accepted there after
    the promotion ends done, within 10 s of the promotion."""
    after = [(t, job) for t, status, job in posts if status == 202 and promoted is not None
             and t >= promoted and layout.shard(job) in lost_shards]
    first = after[0] if after else None
    ok = (first is not None and promoted is not None and first[0] - promoted < 10.0
          and records.get(first[1], {}).get("status") == "done")
    figures = "no job accepted in those shards after the promotion"
    if first is not None and promoted is not None:
        figures = (f"first job in the killed primary's shards accepted "
                   f"{first[0] - promoted:.2f} s after the promotion, "
                   f"{records.get(first[1], {}).get('status', 'no record')}; "
                   f"{len(after)} accepted there after the promotion")
    run.row(name, "generation resumes on the promoted replica (within 10 s), no restart",
            ok, figures)


async def _wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


SCENARIOS: list[tuple[str, Callable[[Run], Awaitable[None]]]] = [
    ("primary", primary_kill),
    ("redis", redis_outage),
    ("worker", worker_kill),
    ("llm", llm_faults),
    ("api", api_kill),
    ("slow", slow_clients),
    ("stall", redis_stall),
    ("supervisor", supervisor_kill),
]
# Scenarios of one topology: stopping or stalling "the" Redis means one server; killing a
# primary under load means a cluster with replicas.
ONE_REDIS_ONLY = frozenset({"redis", "stall"})
CLUSTER_ONLY = frozenset({"primary"})


def applicable(cluster: bool) -> list[str]:
    """The scenario names that make sense on the chosen store, in running order."""
    skip = ONE_REDIS_ONLY if cluster else CLUSTER_ONLY
    return [name for name, _ in SCENARIOS if name not in skip]


def suggest_rows(run: Run, records: list[Any], baseline: tuple[float, float],
                 tolerance: float, slack_ms: float) -> None:
    """Judge /v1/suggest in every fault window against the baseline window."""
    base = _window(records, *baseline)
    p99_base = _p99(base)
    run.row("baseline", "steady /v1/suggest before any fault", _errors(base) == 0,
            f"{len(base)} requests, p50 {_p(base, 50):.2f} ms, p99 {p99_base:.2f} ms, "
            f"errors {_errors(base)}")
    limit = p99_base * tolerance + slack_ms
    for name, t0, t1, errors_allowed in run.windows:
        got = _window(records, t0, t1)
        errs, p99 = _errors(got), _p99(got)
        ok = p99 <= limit and (errors_allowed or errs == 0)
        what = ("/v1/suggest: others keep serving (errors only on the killed process's "
                "connections), p99 unchanged" if errors_allowed
                else "/v1/suggest: 0 errors, p99 unchanged")
        if errors_allowed:
            ok = ok and errs <= max(5, len(got) // 100)
        run.row(name, what, ok, f"{len(got)} requests, p99 {p99:.2f} ms (limit {limit:.2f}), "
                                f"errors {errs} {_kinds(got)}")


def _window(records: list[Any], t0: float, t1: float) -> list[Any]:
    return [r for r in records if t0 <= r[0] < t1]


def _errors(rows: list[Any]) -> int:
    return sum(r[2] != "200" for r in rows)


def _kinds(rows: list[Any]) -> str:
    kinds: dict[str, int] = {}
    for r in rows:
        if r[2] != "200":
            kinds[r[2]] = kinds.get(r[2], 0) + 1
    return orjson.dumps(kinds).decode() if kinds else ""


def _p(rows: list[Any], q: float) -> float:
    ok = sorted(r[1] for r in rows if r[2] == "200")
    if not ok:
        return float("inf")
    return ok[min(len(ok) - 1, int(len(ok) * q / 100))] * 1000


def _p99(rows: list[Any]) -> float:
    return _p(rows, 99)
