"""Validation of the load tester against independent measurements (docs/loadtest.md).

``python -m loadtest.validate [--duration 10] [--out validation.json]`` starts local test
servers and prints three tables:

1. agreement: one endpoint at one rate, our percentiles next to wrk's and the server's own
   handler timings (wrk runs closed-loop on one connection; we then run at the rate it got);
2. stall: a server that blocks for 200 ms once a second, wrk (closed loop) next to us;
3. throughput: the highest rate we sustain on a trivial endpoint (``--find-capacity`` on
   ``rate>=0.99``), and our generator lag at 2,000 req/s, next to wrk's maximum rate.

Needs ``wrk`` on PATH (Debian: ``apt-get install wrk``); without it the wrk columns are empty.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from loadtest.cli import main as loadtest_main
from loadtest.stats import percentiles
from typeahead.numbers import float_arg

_WRK_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _server(*flags: str) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "loadtest.testserver", "--port", str(port),
                             *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(base + "readyz", timeout=1).close()
                break
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def wrk(url: str, duration: float, connections: int) -> dict[str, float] | None:
    """wrk's requests/s and latency percentiles (us), or None when wrk is not installed."""
    if shutil.which("wrk") is None:
        return None
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s",
                          "--latency", url], capture_output=True, text=True, check=True).stdout
    result = {"rate_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        result[f"p{pct}_us"] = float(value) * _WRK_UNITS[unit]
    max_match = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    if max_match:
        result["max_us"] = float(max_match.group(1)) * _WRK_UNITS[max_match.group(2)]
    return result


def ours(url: str, rate: float, duration: float, *extra: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.json"
        with contextlib.redirect_stdout(io.StringIO()):
            loadtest_main(["run", "--url", url, "--rate", f"{rate:g}", "--duration",
                           f"{duration:g}", "--report", str(path), "--quiet", *extra])
        return dict(json.loads(path.read_text()))


def server_timings(base: str, reset: bool = False) -> dict[str, float]:
    with urllib.request.urlopen(base + "_timings" + ("?reset=1" if reset else "")) as resp:
        blob = json.loads(resp.read())["histogram"]
    hist = HdrHistogram.decode(blob.encode("ascii"))
    p50, p90, p99 = percentiles(hist, (50, 90, 99))
    return {"p50_us": p50, "p90_us": p90, "p99_us": p99, "max_us": hist.get_max_value(),
            "count": hist.get_total_count()}


def agreement(duration: float) -> dict[str, Any]:
    with _server() as base:
        url = base + "sleep?ms=2"
        theirs = wrk(url, duration, 1)
        rate = round(theirs["rate_per_s"]) if theirs else 300
        server_timings(base, reset=True)
        report = ours(url, rate, duration, "--arrival", "constant")
        return {"rate_per_s": rate, "wrk": theirs, "server": server_timings(base),
                "loadtest": report["classes"]["plain"], "lag": report["generator_lag"]}


def stall(duration: float) -> dict[str, Any]:
    with _server("--stall-every", "1", "--stall-ms", "200") as base:
        theirs = wrk(base + "fast", duration, 2)
        report = ours(base + "fast", 1000, duration, "--max-lag", "1s")
        return {"wrk": theirs, "loadtest": {**report["classes"]["plain"],
                                            "rate_per_s": report["rates"]["answered_per_s"]}}


def throughput(duration: float) -> dict[str, Any]:
    with _server() as base:
        theirs = wrk(base + "fast", duration, 16)
        at_2000 = ours(base + "fast", 2000, duration, "--arrival", "constant",
                       "--max-lag", "1s")
        capacity = ours(base + "fast", 1000, min(duration, 5), "--arrival", "constant",
                        "--find-capacity", "--capacity-steps", "6", "--slo", "rate>=0.99",
                        "errors<0.1%", "--max-lag", "10ms")
        return {"wrk": theirs, "lag_at_2000": at_2000["generator_lag"],
                "answered_at_2000": at_2000["rates"]["answered_per_s"],
                "capacity": capacity.get("capacity")}


def timer_jitter(samples: int = 2000) -> dict[str, float]:
    """How late a bare 1 ms asyncio sleep wakes up on this machine: the floor under any
    generator's lag (CPU contention, timer granularity)."""
    import asyncio

    from loadtest.runner import run_loop
    from loadtest.stats import Stats

    async def measure() -> Stats:
        stats = Stats()
        for _ in range(samples):
            due = time.perf_counter() + 0.001
            await asyncio.sleep(0.001)
            stats.record_lag((time.perf_counter() - due) * 1e6)
        return stats

    hist = run_loop(measure).lag
    p50, p99 = percentiles(hist, (50, 99))
    return {"p50_us": p50, "p99_us": p99, "max_us": hist.get_max_value()}


def _fmt(row: dict[str, Any] | None, key: str) -> str:
    if not row or key not in row:
        return "-"
    return f"{row[key] / 1000:.2f}ms"


def _print(results: dict[str, Any]) -> None:
    a = results["agreement"]
    print(f"1. agreement at {a['rate_per_s']} req/s on GET /sleep?ms=2")
    print(f"{'':10}{'p50':>10}{'p90':>10}{'p99':>10}")
    for name in ("loadtest", "wrk", "server"):
        row = a[name]
        print(f"{name:10}" + "".join(f"{_fmt(row, k):>10}" for k in ("p50_us", "p90_us",
                                                                      "p99_us")))
    s = results["stall"]
    print("\n2. 200 ms stall once a second, GET /fast (wrk: 2 connections)")
    print(f"{'':10}{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}{'req/s':>10}")
    for name in ("loadtest", "wrk"):
        row = s[name]
        rate = f"{row['rate_per_s']:.0f}" if row else "-"
        print(f"{name:10}" + "".join(f"{_fmt(row, k):>10}" for k in ("p50_us", "p90_us",
                                                                      "p99_us", "max_us"))
              + f"{rate:>10}")
    t = results["throughput"]
    cap = t["capacity"] or {}
    wrk_rate = t["wrk"]["rate_per_s"] if t["wrk"] else None
    print("\n3. trivial endpoint GET /fast")
    print(f"loadtest sustained: {cap.get('rate_per_s')} req/s (broke at "
          f"{cap.get('lowest_failing_rate_per_s')}, generator bound at "
          f"{cap.get('generator_bound_at_per_s')})")
    print(f"wrk closed loop, 16 connections: {wrk_rate} req/s")
    lag = t["lag_at_2000"]
    print(f"generator lag at 2000 req/s: p50 {_fmt(lag, 'p50_us')} p99 {_fmt(lag, 'p99_us')} "
          f"(answered {t['answered_at_2000']}/s)")
    j = results["timer_jitter"]
    print(f"machine floor, lateness of a bare 1 ms asyncio sleep: p50 {_fmt(j, 'p50_us')} "
          f"p99 {_fmt(j, 'p99_us')} max {_fmt(j, 'max_us')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.validate")
    parser.add_argument("--duration", type=float_arg(0.1), default=10.0)
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    results = {"agreement": agreement(args.duration), "stall": stall(args.duration),
               "throughput": throughput(args.duration), "timer_jitter": timer_jitter()}
    _print(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
