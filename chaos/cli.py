"""``python -m chaos``: start the stack, put it under load, run the scenarios, print the table.

Exit code 0 when every check passed, 1 when one failed, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from chaos.scenarios import SCENARIOS, Config, Row, Run, applicable, suggest_rows
from chaos.stack import Stack
from tests.redis_cluster import cluster_support


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="the shortened suite of the tests (3 s outage, 300 streams)")
    p.add_argument("--only", nargs="+", choices=[n for n, _ in SCENARIOS],
                   help="run these scenarios only")
    p.add_argument("--redis-cluster", action="store_true",
                   help="run against a Redis Cluster (3 primaries, 3 replicas) with "
                        "TYPEAHEAD_REDIS_CLUSTER=true: adds 'primary' (a primary SIGKILLed "
                        "under load), drops 'redis' and 'stall' (one server's outage and stall)")
    p.add_argument("--rate", type=float, default=100.0, help="suggest requests a second")
    p.add_argument("--outage", type=float, default=None, help="Redis outage seconds (10)")
    p.add_argument("--streams", type=int, default=None, help="idle SSE streams (1000)")
    p.add_argument("--tolerance", type=float, default=1.5,
                   help="a window's p99 may be this times the baseline p99 ...")
    p.add_argument("--slack-ms", type=float, default=5.0, help="... plus this (ms)")
    p.add_argument("--refuse-ms", type=float, default=100.0,
                   help="/v1/generate answers 503 within this while Redis is down (ms)")
    p.add_argument("--json", type=Path, help="write the rows as JSON")
    p.add_argument("--markdown", type=Path, help="write the table as Markdown")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    return p


def config(args: argparse.Namespace) -> Config:
    cfg = Config(quick=args.quick, refuse_ms=args.refuse_ms)
    if args.quick:
        cfg.outage_s, cfg.sse_streams, cfg.slow_clients, cfg.hold_s = 3.0, 300, 40, 3.0
    if args.outage is not None:
        cfg.outage_s = args.outage
    if args.streams is not None:
        cfg.sse_streams = args.streams
    return cfg


class UsageError(Exception):
    """A command line that asks for something this run cannot do (exit 2)."""


def chosen(args: argparse.Namespace) -> list[str]:
    """The scenarios to run: those asked for (all by default) that fit the store."""
    fits = applicable(args.redis_cluster)
    unfit = [name for name in args.only or () if name not in fits]
    if unfit:
        store = "a Redis Cluster" if args.redis_cluster else "one Redis (add --redis-cluster)"
        raise UsageError(f"scenario(s) {', '.join(unfit)} do not apply to {store}")
    return [name for name in fits if not args.only or name in args.only]


async def execute(args: argparse.Namespace, work: Path) -> list[Row]:
    cfg = config(args)
    names = chosen(args)
    stack = Stack(work, cluster_mode=args.redis_cluster)
    store = ("a Redis Cluster (3 primaries, 3 replicas)" if args.redis_cluster
             else "redis-server")
    print(f"chaos: starting {store}, the vLLM stand-in, `typeahead serve --workers "
          f"{stack.api_workers}` and {stack.gen_workers} workers in {work}", flush=True)
    await stack.start()
    load = stack.start_load(args.rate, work / "load.json")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            run = Run(stack, cfg, session)
            await asyncio.sleep(3.0)  # connections warm, pages of the index mapped in
            baseline = (time.time(), time.time() + (3.0 if cfg.quick else 5.0))
            await asyncio.sleep(baseline[1] - time.time())
            for name, scenario in SCENARIOS:
                if name not in names:
                    continue
                print(f"chaos: scenario {name}", flush=True)
                await scenario(run)
                await asyncio.sleep(1.0)  # settle before the next fault
    finally:
        load.send_signal(signal.SIGTERM)
        await asyncio.to_thread(load.wait, 30)
        await stack.stop()
    records: list[Any] = orjson.loads((work / "load.json").read_bytes())
    suggest_rows(run, records, baseline, args.tolerance, args.slack_ms)
    return run.rows


def order(rows: list[Row]) -> list[Row]:
    names = ["baseline", *dict.fromkeys(r.scenario for r in rows if r.scenario != "baseline")]
    return sorted(rows, key=lambda r: names.index(r.scenario))


def render(rows: list[Row]) -> str:
    lines = ["| scenario | checked | result | figures |", "|---|---|---|---|"]
    for r in order(rows):
        figures = r.figures.replace("|", "/")
        lines.append(f"| {r.scenario} | {r.checked} | {'PASS' if r.ok else 'FAIL'} | {figures} |")
    return "\n".join(lines)


def machine() -> str:
    import os

    return (f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f} at the end, Python {platform.python_version()}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        chosen(args)
    except UsageError as exc:
        parser.error(str(exc))
    if args.refuse_ms <= 0:
        parser.error(f"--refuse-ms must be positive, got {args.refuse_ms:g}")
    if args.redis_cluster and (reason := cluster_support()) is not None:
        parser.error(f"--redis-cluster needs redis-server and redis-cli: {reason}")
    # The stand-in logs every stream a killed worker abandons; that is the point, not news.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="typeahead-chaos-"))
    try:
        rows = asyncio.run(execute(args, work))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    table = render(rows)
    took = time.monotonic() - started
    print()
    print(table)
    passed = sum(r.ok for r in rows)
    print(f"\n{passed}/{len(rows)} checks passed in {took:.0f} s; {machine()}")
    if args.json:
        args.json.write_bytes(orjson.dumps({"rows": [r.__dict__ for r in order(rows)],
                                             "seconds": took, "machine": machine()},
                                            option=orjson.OPT_INDENT_2))
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0 if passed == len(rows) else 1
