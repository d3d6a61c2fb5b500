"""Benchmarks of the generation tier (prints tables; a few minutes on a laptop).

1. cached: POST /v1/generate for cached queries at a fixed arrival rate (open loop; latency
   is measured from each request's scheduled send time, so a stalled server cannot hide).
2. overhead: time to first token seen by a client (POST, then the event stream) minus the
   vLLM stand-in's own time to first token, per request, run one at a time. After each, the
   same client streams one request from the stand-in directly: the overhead of that direct
   call is the baseline any HTTP call to the LLM pays on this machine.
3. semantic: precision and hit rate of the semantic cache on SQuAD questions (two questions
   on the same paragraph count as a correct match), per similarity threshold.
4. throughput (``--throughput-jobs N``): N distinct uncached jobs, ``--throughput-clients`` at
   a time, each drained to its last token; jobs per second, and the CPU seconds the worker,
   the API and Redis spent per job (from /proc), which is what sizes workers per core.

Redis, the API, a worker and the stand-in run as separate processes. Phases 1 and 2 run once per
mode (``--modes``), each on a freshly started API: ``inline`` (the default set-up: the API runs
the jobs it creates, ``typeahead.generation.inline``) and ``queue``
(``TYPEAHEAD_GENERATE_INLINE_JOBS=0``:
every job goes through Redis to the worker).
Usage: python bench/bench_generate.py [--rate 500] [--duration 10] [--overhead-n 200]
       [--modes inline,queue] [--skip-semantic] [--throughput-jobs 0] [--tokens 8]
       [--token-delay 0] [--throughput-clients 32] [--worker-concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from typeahead.sse import read_events

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TYPEAHEAD_SHARED", ROOT.parent / "shared")) / "data"
DOCS_DIR = SHARED / "docs"
INDEX = ROOT / "indexes" / "aol"  # `make index`: the API serves the real app over it


# Mode -> TYPEAHEAD_GENERATE_INLINE_JOBS of the API.
MODES = {"inline": "8", "queue": "0"}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# --- child processes ------------------------------------------------------------------------


async def serve_standin(port: int, ttft_s: float, tokens: int, delay_s: float) -> None:
    from aiohttp import web

    from tests.vllm_standin import DEFAULT_TOKENS, StandIn

    words = [DEFAULT_TOKENS[i % len(DEFAULT_TOKENS)] for i in range(tokens)]
    standin = StandIn(ttft_s=ttft_s, tokens=words, token_delay_s=delay_s)
    app = standin.app()

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"calls": standin.calls, "ttfts": standin.ttfts})

    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def child(role: str, port: int, env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, "--role", role, "--port", str(port), *extra],
                            env=env, cwd=ROOT)


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_child(args: argparse.Namespace) -> None:
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve_standin(args.port, args.ttft, args.tokens, args.token_delay))


# --- load ------------------------------------------------------------------------------------


async def wait_up(session: Any, url: str) -> None:
    for _ in range(200):
        try:
            async with session.get(url) as resp:
                await resp.read()
                return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def generate(session: Any, base: str, query: str) -> dict[str, Any]:
    async with session.post(base + "/v1/generate", json={"query": query}) as resp:
        return {**orjson.loads(await resp.read()), "http": resp.status}


async def first_token(session: Any, base: str, path: str) -> float:
    async with session.get(base + path) as resp:
        async for event in read_events(resp.content):
            if event.event == "token":
                return time.perf_counter()
    raise RuntimeError("stream ended without a token")


async def drain(session: Any, base: str, path: str) -> None:
    async with session.get(base + path) as resp:
        async for event in read_events(resp.content):
            if event.event in ("done", "error"):
                return


async def cached_phase(base: str, rate: float, duration: float) -> dict[str, Any]:
    import aiohttp

    queries = [f"what is cached query number {i}" for i in range(50)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        for q in queries:  # fill the cache
            body = await generate(session, base, q)
            if body["http"] == 202:
                await drain(session, base, body["stream_url"])
        n = int(rate * duration)
        lat: list[float] = []
        errors = 0
        lag: list[float] = []
        start = time.perf_counter() + 0.1

        async def one(i: int) -> None:
            nonlocal errors
            scheduled = start + i / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            lag.append(time.perf_counter() - scheduled)
            body = await generate(session, base, queries[i % len(queries)])
            lat.append(time.perf_counter() - scheduled)
            errors += body["http"] != 200 or not body.get("cached")

        tasks = []
        for i in range(n):  # tasks are created on schedule, not all at once
            await asyncio.sleep(max(0.0, start + i / rate - 0.002 - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return {"n": n, "p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat), "errors": errors,
            "lag_p99": pct(lag, 99)}


async def direct_first_token(session: Any, standin: str, i: int) -> float:
    """Time to the first token calling the stand-in directly, as the tier does (streamed)."""
    body = {"model": "stand-in/model", "stream": True,
            "messages": [{"role": "user", "content": f"direct baseline {i}"}]}
    t0 = time.perf_counter()
    first = 0.0
    async with session.post(standin + "/v1/chat/completions", json=body) as resp:
        async for event in read_events(resp.content):
            if not first and event.data.startswith("{") and orjson.loads(event.data)[
                    "choices"][0]["delta"].get("content"):
                first = time.perf_counter()
    return first - t0


async def overhead_phase(base: str, standin: str, n: int) -> dict[str, Any]:
    """Each tier request is followed by one straight to the stand-in with the same client:
    the second is what any HTTP call to the LLM costs this client and machine (request
    building, the stand-in's own HTTP server, parsing the stream), the baseline the tier's
    overhead can be read against."""
    import aiohttp

    client: list[float] = []
    direct: list[float] = []
    async with aiohttp.ClientSession() as session:
        async with session.get(standin + "/stats") as resp:
            calls_before = orjson.loads(await resp.read())["calls"]
        for i in range(n):
            t0 = time.perf_counter()
            body = await generate(session, base, f"uncached overhead query {i} {time.time()}")
            t1 = await first_token(session, base, body["stream_url"])
            client.append(t1 - t0)
            await drain(session, base, body["stream_url"])
            direct.append(await direct_first_token(session, standin, i))
        async with session.get(standin + "/stats") as resp:
            stats = orjson.loads(await resp.read())
    own = stats["ttfts"][-2 * n:]
    over = [c - s for c, s in zip(client, own[0::2], strict=True)]
    base_over = [c - s for c, s in zip(direct, own[1::2], strict=True)]
    return {"n": n, "calls": stats["calls"] - calls_before - n, "client_p50": pct(client, 50),
            "standin_p50": pct(own[0::2], 50), "p50": pct(over, 50), "p99": pct(over, 99),
            "direct_p50": pct(base_over, 50), "direct_p99": pct(base_over, 99)}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and their children (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in _with_children(pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _with_children(pids: list[int]) -> list[int]:
    out = list(pids)
    for pid in pids:
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        out.extend(_with_children([int(k) for k in kids]))
    return out


async def throughput_phase(base: str, n: int, clients: int,
                           roles: dict[str, list[int]]) -> dict[str, Any]:
    import aiohttp

    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    failed = 0
    stamp = time.time()

    async def client(session: Any) -> None:
        nonlocal failed
        while not queue.empty():
            i = queue.get_nowait()
            body = await generate(session, base, f"throughput query {i} {stamp}")
            if body["http"] != 202:
                failed += 1
                continue
            await drain(session, base, body["stream_url"])

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        cpu0 = {role: cpu_seconds(pids) for role, pids in roles.items()}
        t0 = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        wall = time.perf_counter() - t0
        cpu = {role: cpu_seconds(pids) - cpu0[role] for role, pids in roles.items()}
    done = n - failed
    return {"n": n, "failed": failed, "wall": wall, "jobs_s": done / wall,
            **{f"{role}_cpu_ms": 1000.0 * c / max(done, 1) for role, c in cpu.items()}}


# --- semantic cache precision ----------------------------------------------------------------


def semantic_phase(thresholds: list[float]) -> tuple[str, list[dict[str, float]]]:
    from typeahead.generation.extractive import load_embedder

    path = DOCS_DIR / "squad2_dev_questions.jsonl.gz"
    with gzip.open(path, "rt") as fh:
        rows = [orjson.loads(line) for line in fh]
    groups: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        groups[r["paragraph_id"]].append(r["question"])
    questions = [q for qs in groups.values() for q in qs]
    para = [p for p, qs in groups.items() for _ in qs]
    embedder = load_embedder()
    vecs = embedder.encode(questions).astype(np.float32)
    sims = vecs @ vecs.T
    np.fill_diagonal(sims, -1.0)
    nearest = sims.argmax(axis=1)
    best = sims[np.arange(len(questions)), nearest]
    same = np.array([para[i] == para[j] for i, j in enumerate(nearest)])
    out = []
    for t in thresholds:
        hit = best >= t
        out.append({"threshold": t, "hit_rate": float(hit.mean()),
                    "precision": float(same[hit].mean()) if hit.any() else float("nan")})
    return embedder.fingerprint, out


# --- main ------------------------------------------------------------------------------------


def free_port() -> int:
    from tests.redis_server import free_port as fp

    return fp()


async def load_phases(args: argparse.Namespace, api: str, standin: str,
                      roles: dict[str, list[int]]) -> tuple[Any, Any, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        await wait_up(session, standin + "/stats")
        await wait_up(session, api + "/v1/generate/" + "0" * 32)
    cached = await cached_phase(api, args.rate, args.duration)
    overhead = await overhead_phase(api, standin, args.overhead_n)
    throughput = (await throughput_phase(api, args.throughput_jobs, args.throughput_clients, roles)
                  if args.throughput_jobs else None)
    return cached, overhead, throughput


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--overhead-n", type=int, default=200)
    parser.add_argument("--ttft", type=float, default=0.05, help="stand-in time to first token")
    parser.add_argument("--modes", default="inline,queue",
                        help="API set-ups to measure: inline (default config) and/or queue")
    parser.add_argument("--skip-semantic", action="store_true",
                        help="skip the semantic cache precision phase")
    parser.add_argument("--tokens", type=int, default=8,
                        help="tokens the stand-in streams per answer (default: 8)")
    parser.add_argument("--token-delay", type=float, default=0.0,
                        help="seconds between the stand-in's tokens (default: 0)")
    parser.add_argument("--throughput-jobs", type=int, default=0,
                        help="uncached jobs for the throughput phase (default: 0, skipped)")
    parser.add_argument("--throughput-clients", type=int, default=32,
                        help="jobs in flight in the throughput phase (default: 32)")
    parser.add_argument("--worker-concurrency", type=int, default=4,
                        help="the worker's --concurrency (default: 4, the worker's own)")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        run_child(args)
        return 0
    from tests.redis_server import start_redis

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        parser.error(f"--modes: a comma-separated list of {', '.join(MODES)}")
    redis = start_redis()
    standin_port = free_port()
    standin = f"http://127.0.0.1:{standin_port}"
    env = dict(os.environ, REDIS_URL=redis.url, TYPEAHEAD_LLM_URL=standin + "/v1",
               TYPEAHEAD_LOG_LEVEL="WARNING", TYPEAHEAD_QUEUE_MAX_DEPTH="100000",
               TYPEAHEAD_GENERATE_RATE_PER_MIN="0")
    docs = DOCS_DIR / "squad2_dev_wikipedia_paragraphs.jsonl.gz"
    procs = [child("standin", standin_port, env, "--ttft", str(args.ttft), "--tokens",
                   str(args.tokens), "--token-delay", str(args.token_delay)),
             subprocess.Popen([sys.executable, "-m", "typeahead", "worker", "--docs", str(docs),
                               "--concurrency", str(args.worker_concurrency)],
                              env=env, cwd=ROOT)]
    rows: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    throughputs: list[tuple[str, dict[str, Any]]] = []
    try:
        for mode in modes:
            api_port = free_port()
            api = subprocess.Popen(
                [sys.executable, "-m", "typeahead", "serve", "--index", str(INDEX), "--port",
                 str(api_port), "--workers", "1"],
                env={**env, "TYPEAHEAD_GENERATE_INLINE_JOBS": MODES[mode]}, cwd=ROOT)
            try:
                roles = {"worker": [procs[1].pid], "api": [api.pid],
                         "redis": [redis.proc.pid] if redis.proc else []}
                with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                    cached, overhead, throughput = runner.run(
                        load_phases(args, f"http://127.0.0.1:{api_port}", standin, roles))
                rows.append((mode, cached, overhead))
                if throughput:
                    throughputs.append((mode, throughput))
            finally:
                api.terminate()
                api.wait(10)
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        redis.stop()
    fingerprint, semantic = ("skipped", []) if args.skip_semantic else semantic_phase(
        [0.80, 0.85, 0.90, 0.92, 0.95, 0.98])
    print_tables(args, rows, fingerprint, semantic)
    print_throughput(args, throughputs)
    ok = all(c["p99"] <= 0.003 and o["p99"] <= 0.003 and c["errors"] == 0 for _, c, o in rows)
    return 0 if ok else 1


def print_tables(args: argparse.Namespace, rows: list[tuple[str, dict[str, Any], dict[str, Any]]],
                 fingerprint: str, semantic: list[dict[str, float]]) -> None:
    ms = 1000.0
    print(f"\ncached POST /v1/generate, open loop {args.rate:.0f} req/s for {args.duration:.0f} s")
    print("| mode | n | p50 ms | p99 ms | max ms | errors | sender lag p99 ms | target p99 |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, cached, _ in rows:
        print(f"| {mode} | {cached['n']} | {cached['p50'] * ms:.2f} | {cached['p99'] * ms:.2f} | "
              f"{cached['max'] * ms:.2f} | {cached['errors']} | {cached['lag_p99'] * ms:.2f} | "
              "3 ms |")
    print(f"\noverhead over the stand-in's time to first token ({args.ttft * ms:.0f} ms)")
    print("| mode | n | upstream calls | client TTFT p50 ms | stand-in TTFT p50 ms "
          "| overhead p50 ms | overhead p99 ms | target p99 | direct call p50 / p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, _, overhead in rows:
        print(f"| {mode} | {overhead['n']} | {overhead['calls']} | "
              f"{overhead['client_p50'] * ms:.2f} | {overhead['standin_p50'] * ms:.2f} | "
              f"{overhead['p50'] * ms:.2f} | {overhead['p99'] * ms:.2f} | 3 ms | "
              f"{overhead['direct_p50'] * ms:.2f} / {overhead['direct_p99'] * ms:.2f} |")
    print("(direct call: the same client streaming from the stand-in itself, one such call after "
          "each tier request; its overhead over the stand-in's time to first token is what any "
          "HTTP call to the LLM costs here)")
    print(f"\nsemantic cache on SQuAD questions (embedder {fingerprint}); a hit is correct when "
          "the nearest cached question asks about the same paragraph")
    print("| threshold | hit rate | precision |")
    print("|---|---|---|")
    for row in semantic:
        print(f"| {row['threshold']:.2f} | {row['hit_rate']:.3f} | {row['precision']:.3f} |")


def print_throughput(args: argparse.Namespace, rows: list[tuple[str, dict[str, Any]]]) -> None:
    if not rows:
        return
    print(f"\nthroughput: {args.throughput_jobs} uncached jobs, {args.throughput_clients} in "
          f"flight, {args.tokens} tokens each {args.token_delay * 1000:.0f} ms apart, stand-in "
          f"first token {args.ttft * 1000:.0f} ms, "
          f"worker --concurrency {args.worker_concurrency}")
    print("| mode | jobs | failed | wall s | jobs/s | worker CPU ms/job | API CPU ms/job "
          "| Redis CPU ms/job |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, t in rows:
        print(f"| {mode} | {t['n']} | {t['failed']} | {t['wall']:.1f} | {t['jobs_s']:.1f} | "
              f"{t['worker_cpu_ms']:.2f} | {t['api_cpu_ms']:.2f} | {t['redis_cpu_ms']:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
