"""``/v1/suggest`` over HTTP at fixed arrival rates (open loop), plus peak throughput.

Starts ``typeahead serve`` (suggest only, N workers) on a free port, then drives it with the
project's load tester (``python -m loadtest run``, open model, latency from the scheduled send
time), and with wrk (if installed) for peak throughput. Two kinds of traffic:

- ``prefixes``: a 2-8 character prefix of a distinct held-out AOL query per request, the
  worst case for the per-process answer cache (most requests are misses);
- ``keystrokes``: users typing held-out AOL queries drawn by their held-out counts, one request
  per debounced keystroke, as a search box sends them (popular prefixes repeat, as they do);
- ``floor``: one keystroke ("new y") over and over, answered from the answer cache in tens of
  µs: what the load generator, the kernel and the host add to any answer at that rate. A
  latency target under this row's p99 cannot be met on the machine, whatever the server does.

Every row gets a freshly started server, so no row inherits another's warm cache; the
keystrokes row first runs ``--warmup`` seconds of other sessions (another seed) unmeasured, as
a server that has been up for a while has seen the popular prefixes.

With ``--pin`` (the default where there are 2+ CPUs) the load generator runs on CPU 0 and the
server on the others (one worker per CPU unless ``--workers`` says otherwise). Unpinned, the
kernel often wakes the generator on the CPU the server is busy on (wake-affine scheduling), and
the generator's own lag then dominates the tail: on the 2-core development machine its p99
fell from about 1.0 ms to 0.3 ms when pinned.

    python bench/bench_http.py --index indexes/aol [--rates 1000,3000] [--duration 20]
        [--semantic] [--paths fast,aiohttp]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import AOL, print_table
from typeahead.corpus import read_rows
from typeahead.normalize import normalize

HELD_OUT = "count_rows_800001_999999"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prefixes_file(n: int, out: Path, seed: int = 5) -> Path:
    queries = [normalize(r.text) for r in read_rows(AOL, text_col="query", weight_col=HELD_OUT)
               if r.weight > 0]
    rng = random.Random(seed)
    rng.shuffle(queries)
    values = [q[: rng.randint(2, 8)] for q in queries[:n] if len(q) > 2]
    out.write_text("\n".join(urllib.request.quote(v) for v in values) + "\n", encoding="utf-8")
    return out


def pinned(cpus: set[int] | None) -> Any:
    """A ``preexec_fn`` that confines a child (and its own children) to ``cpus``."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def start_server(index: Path, port: int, workers: int, env: dict[str, str],
                 cpus: set[int] | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "typeahead", "serve", "--index", str(index),
                             "--port", str(port), "--workers", str(workers)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=pinned(cpus))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("server did not become ready")


FLOOR_QUERY = "new%20y"


def traffic_args(traffic: str, values: Path) -> list[str]:
    if traffic == "prefixes":
        return ["--url", "/v1/suggest?q={value}", "--values", str(values)]
    if traffic == "floor":
        return ["--url", f"/v1/suggest?q={FLOOR_QUERY}"]
    return ["--log", str(AOL), "--text-col", "query", "--weight-col", HELD_OUT,
            "--generate-share", "0"]


def run_rate(base: str, traffic: list[str], rate: int, duration: int, procs: int, tmp: Path,
             cpus: set[int] | None = None, seed: int = 1) -> dict[str, Any]:
    report = tmp / f"r{rate}.json"
    cmd = [sys.executable, "-m", "loadtest", "run", "--target", base, *traffic,
           "--rate", str(rate), "--duration", f"{duration}s", "--procs", str(procs),
           "--seed", str(seed), "--report", str(report), "--quiet", "--max-lag", "5ms",
           "--slo", "errors<0.1%"]
    rc = subprocess.run(cmd, check=False, preexec_fn=pinned(cpus)).returncode
    data = json.loads(report.read_text()) if report.exists() else {}
    data["exit"] = rc
    return dict(data)


def wrk_peak(base: str, seconds: int) -> float | None:
    if shutil.which("wrk") is None:
        return None
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{seconds}s",
                          f"{base}/v1/suggest?q=new%20y"], capture_output=True, text=True,
                         check=False).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--index", type=Path, default=Path("indexes/aol"))
    ap.add_argument("--rates", default="1000,3000")
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--workers", type=int, default=0,
                    help="API workers (default: one per server CPU when pinned, else 2)")
    ap.add_argument("--procs", type=int, default=1, help="load generator processes")
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction,
                    default=(os.cpu_count() or 1) >= 2,
                    help="generator on CPU 0, server on the other CPUs")
    ap.add_argument("--reports", type=Path, default=None,
                    help="keep each row's load-test JSON report (with its timeline) here")
    ap.add_argument("--warmup", type=int, default=10,
                    help="seconds of unmeasured keystroke traffic before the keystrokes row")
    ap.add_argument("--semantic", action="store_true", help="keep semantic + results on")
    ap.add_argument("--paths", default="fast",
                    help="comma-separated: fast (keystrokes answered beneath aiohttp, the "
                         "default server) and/or aiohttp (TYPEAHEAD_SUGGEST_FAST_PATH=false); "
                         "with both, each row runs on each, back to back")
    ap.add_argument("--traffic", default="prefixes,keystrokes,floor",
                    help="comma-separated: prefixes (distinct, cache-cold), keystrokes "
                         "(typing sessions) and/or floor (one cached keystroke repeated: the "
                         "machine's own latency floor); keystrokes and floor run at the "
                         "lowest rate only")
    args = ap.parse_args()
    odd = set(args.traffic.split(",")) - {"prefixes", "keystrokes", "floor"}
    if odd:
        ap.error(f"--traffic takes prefixes, keystrokes and/or floor, not {', '.join(sorted(odd))}")
    unknown = set(args.paths.split(",")) - {"fast", "aiohttp"}
    if unknown:
        ap.error(f"--paths takes fast and/or aiohttp, not {', '.join(sorted(unknown))}")
    env = {**os.environ, "TYPEAHEAD_GENERATION": "false"}
    if not args.semantic:
        env.update(TYPEAHEAD_SEMANTIC="false", TYPEAHEAD_RESULTS_K="0")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    all_cpus = sorted(os.sched_getaffinity(0))
    gen_cpus, server_cpus = ({all_cpus[0]}, set(all_cpus[1:])) if args.pin else (None, None)
    workers = args.workers or (len(server_cpus) if server_cpus else 2)
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        values = prefixes_file(20_000, tmp / "prefixes.txt")
        rates = [int(r) for r in args.rates.split(",")]
        kinds = args.traffic.split(",")
        paths = list(dict.fromkeys(args.paths.split(",")))
        plan = [("prefixes", rate, path) for rate in rates if "prefixes" in kinds
                for path in paths]
        plan += [(kind, min(rates), path) for kind in ("keystrokes", "floor") if kind in kinds
                 for path in paths]
        peak = None
        for traffic, rate, path in plan:
            server = start_server(args.index, port, workers,
                                  {**env, "TYPEAHEAD_SUGGEST_FAST_PATH": str(path == "fast")},
                                  server_cpus)
            try:
                load = traffic_args(traffic, values)
                if traffic == "keystrokes" and args.warmup:
                    run_rate(base, load, rate, args.warmup, args.procs, tmp, gen_cpus, seed=2)
                rep = run_rate(base, load, rate, args.duration, args.procs, tmp, gen_cpus)
                if args.reports:
                    args.reports.mkdir(parents=True, exist_ok=True)
                    (args.reports / f"{traffic}-{rate}-{path}.json").write_bytes(
                        (tmp / f"r{rate}.json").read_bytes())
                rows.append([traffic, path, *_row(rate, rep)])
                if peak is None:
                    peak = wrk_peak(base, 10)
            finally:
                server.terminate()
                server.wait(timeout=20)
    where = (f"generator on CPU {sorted(gen_cpus)}, server on CPUs {sorted(server_cpus)}"
             if gen_cpus and server_cpus else "unpinned")
    print_table(f"/v1/suggest over HTTP ({workers} workers, {where}, open loop, ms)",
                ["traffic", "path", "target rate", "achieved", "n", "p50", "p90", "p99", "p99.9",
                 "max", "errors", "gen lag p99", "gen lag max", "verdict"], rows)
    print(f"\npeak throughput (wrk, 2 threads, 64 connections): "
          f"{peak:,.0f} req/s" if peak else "\nwrk not installed: no peak figure")
    return 0


def _row(rate: int, rep: dict[str, Any]) -> list[object]:
    classes = rep.get("classes", {})
    cls = classes.get("plain") or classes.get("suggest") or rep.get("all", {})
    rates = rep.get("rates", {})
    lag = rep.get("generator_lag", {})

    def ms(key: str) -> object:
        value = cls.get(key)
        return round(value / 1000, 3) if isinstance(value, (int, float)) else "?"

    return [rate, rates.get("answered_per_s", "?"), cls.get("count", "?"), ms("p50_us"),
            ms("p90_us"), ms("p99_us"), ms("p99_9_us"), ms("max_us"),
            rep.get("errors", {}) or 0, ms_of(lag.get("p99_us")), ms_of(lag.get("max_us")),
            rep.get("verdict", "?")]


def ms_of(value: object) -> object:
    return round(value / 1000, 3) if isinstance(value, (int, float)) else "?"


if __name__ == "__main__":
    raise SystemExit(main())
