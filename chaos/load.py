"""Open-loop ``/v1/suggest`` load in its own process: ``python -m chaos.load``.

Requests leave at fixed intended times whether or not earlier ones answered, and latency is
counted from the intended time, so a stall shows up instead of slowing the generator down. On
SIGTERM (or after ``--duration``) it writes one record per request: intended wall-clock time,
latency in seconds, and the HTTP status or an error kind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp
import orjson

Record = tuple[float, float, str]
TIMEOUT_S = 5.0


async def _one(session: aiohttp.ClientSession, url: str, intended: float, wall: float,
               out: list[Record]) -> None:
    try:
        async with session.get(url) as resp:
            await resp.read()
            kind = str(resp.status)
    except TimeoutError:
        kind = "timeout"
    except aiohttp.ClientError as exc:
        kind = type(exc).__name__
    out.append((wall, time.perf_counter() - intended, kind))


async def run(target: str, rate: float, queries: list[str], duration: float, out_path: Path
              ) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    urls = [f"{target}/v1/suggest?q={quote(q, safe='')}&k=10" for q in queries]
    records: list[Record] = []
    tasks: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start, wall0, i = time.perf_counter(), time.time(), 0
        while not stop.is_set() and i / rate < duration:
            intended = start + i / rate
            delay = intended - time.perf_counter()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
            task = asyncio.create_task(_one(session, urls[i % len(urls)], intended,
                                            wall0 + (intended - start), records))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.wait(tasks, timeout=TIMEOUT_S + 1)
    out_path.write_bytes(orjson.dumps(records))


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m chaos.load", description=__doc__)
    p.add_argument("--target", required=True)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--queries", type=Path, required=True, help="one prefix a line")
    p.add_argument("--duration", type=float, default=3600.0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    queries = [q for q in args.queries.read_text(encoding="utf-8").splitlines() if q.strip()]
    asyncio.run(run(args.target.rstrip("/"), args.rate, queries, args.duration, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
