"""The SLO suite (``make slo``) with several LLM stand-ins, one SIGKILLed mid-run.

One command for the run of docs/benchmarks.md ("With three LLM stand-ins, one killed
mid-run"): a private ``redis-server``, ``--standins`` vLLM stand-ins
(``bench/bench_generate.py --role standin``: 50 ms to the first token, 8 tokens 10 ms apart)
listed in ``TYPEAHEAD_LLM_URL``, ``typeahead serve --workers 1`` and one ``typeahead worker``
over ``--index`` (generate rate limits off), then ``python -m loadtest suite --target ...
--generate-new-share 0.5`` (half the Generate clicks unique, so they call an LLM). ``--kill-at``
seconds after the suite starts, stand-in 0 gets SIGKILL; ``--restart-after`` seconds later it
is started again on its port.

Besides the suite's own table and verdict it prints suggest p99 before the kill, from the kill
to 5 s after the restart, and after; the jobs and the per-endpoint LLM requests from
``/metrics``; the API's ejection and re-admission log lines; and the CPU seconds each process
spent during the load (from /proc), which says where the 2 cores went.

The knobs that tell the causes apart: ``--no-kill``; ``--standins 1`` (with ``--no-kill``);
``--inline-jobs 0`` (every job through the queue to the worker instead of running in the API
process); ``--duration 20 --kill-at 8 --restart-after 4`` for short comparisons. ``--json``
writes the summary for comparing runs. Exit code: the suite's (0 pass, 1 an SLO broke,
3 invalid: the load generator fell behind).

Usage: python bench/slo_llm_kill.py [--duration 60] [--kill-at 30] [--restart-after 10]
       [--no-kill] [--standins 3] [--inline-jobs N] [--procs 1] [--json out.json] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_generate import cpu_seconds
from tests.loadtest_servers import wait_http
from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
LOCAL = "127.0.0.1"
RESTART_SETTLE_S = 5.0  # after the restart, the window of the kill lasts this much longer
LOAD_LINE = "loadtest suite: "  # what the suite prints when its load starts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/slo_llm_kill.py",
                                description=__doc__.split("\n")[0])
    p.add_argument("--index", default="indexes/aol", help="index served (make index)")
    p.add_argument("--duration", type=float, default=60.0, help="load seconds")
    p.add_argument("--kill-at", type=float, default=30.0,
                   help="seconds after the suite starts that stand-in 0 gets SIGKILL")
    p.add_argument("--restart-after", type=float, default=10.0,
                   help="seconds after the kill that it is started again")
    p.add_argument("--no-kill", action="store_true", help="kill nothing (the control run)")
    p.add_argument("--standins", type=int, default=3, help="LLM stand-ins")
    p.add_argument("--inline-jobs", type=int, default=None,
                   help="TYPEAHEAD_GENERATE_INLINE_JOBS of the API (default: the setting's; "
                        "0: every job runs on the worker)")
    p.add_argument("--generate-new-share", type=float, default=0.5)
    p.add_argument("--procs", type=int, default=1, help="load generator processes")
    p.add_argument("--rate", type=float, default=1000.0, help="suggest load (requests/s)")
    p.add_argument("--json", type=Path, help="write the summary as JSON")
    p.add_argument("--keep", action="store_true", help="keep the logs' directory")
    return p


class Processes:
    """The stack's processes, with their logs in one directory; stopped in reverse order."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work, self.env = work, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def standin_args(port: int) -> list[str]:
    return ["bench/bench_generate.py", "--role", "standin", "--port", str(port), "--ttft",
            "0.05", "--tokens", "8", "--token-delay", "0.01"]


def load_started(log: Path, stop: threading.Event, marks: dict[str, float]) -> float | None:
    """When the suite's load began (it prints its plan once the prewarm is done): the zero of
    its timeline, and of the kill's schedule. Also kept as ``marks["load_wall"]``."""
    while not stop.is_set():
        if LOAD_LINE in log.read_text(errors="replace"):
            marks["load_wall"] = time.time()
            return time.monotonic()
        stop.wait(0.05)
    return None


def killer(procs: Processes, port: int, args: argparse.Namespace, marks: dict[str, float],
           stop: threading.Event) -> None:
    """SIGKILL stand-in 0 ``--kill-at`` s into the load, start it again ``--restart-after``
    later (with ``--no-kill``, only note when the load began)."""
    started = load_started(procs.work / "loadtest.log", stop, marks)
    if args.no_kill or started is None:
        return
    if stop.wait(max(0.0, started + args.kill_at - time.monotonic())):
        return
    victim = procs.procs["standin0"]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    marks["kill"] = time.monotonic() - started
    if stop.wait(args.restart_after):
        return
    procs.start("standin0", standin_args(port))
    marks["restart"] = time.monotonic() - started


class CpuSampler(threading.Thread):
    """CPU seconds each process (with its children) spends from now until ``stop``, sampled
    every 0.25 s, so that a process that exits or is killed still counts up to its last
    sample; a restarted stand-in adds to its role."""

    def __init__(self, procs: Processes, redis: RedisServer, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.procs, self.redis, self.halt = procs, redis, stop
        self.seen: dict[int, tuple[str, float, float]] = {}  # pid -> role, first, last

    def sample(self) -> None:
        pids = {proc.pid: name for name, proc in list(self.procs.procs.items())
                if proc.poll() is None}
        if self.redis.proc is not None:
            pids[self.redis.proc.pid] = "redis"
        for pid, name in pids.items():
            now = cpu_seconds([pid])
            role, first, _ = self.seen.get(pid, (name, now, now))
            self.seen[pid] = (role, first, now)

    def run(self) -> None:
        while not self.halt.wait(0.25):
            self.sample()

    def by_role(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for role, first, last in self.seen.values():
            out[role] = round(out.get(role, 0.0) + last - first, 2)
        return out


def window_p99_ms(timeline: list[dict[str, float]], t0: float, t1: float) -> float | None:
    """The worst per-second suggest p99 in [t0, t1) (the timeline keeps 1 s histograms)."""
    values = [p["p99_us"] for p in timeline if t0 <= p["t_s"] < t1 and p["count"]]
    return max(values) / 1000 if values else None


def metrics_lines(base: str) -> list[str]:
    with urllib.request.urlopen(base + "metrics", timeout=5) as resp:
        text = resp.read().decode()
    wanted = ("typeahead_generate_job_starts", "typeahead_generate_job_duration_seconds_count",
              "typeahead_llm_endpoint_requests_total", "typeahead_llm_endpoint_errors_total")
    return [line for line in text.splitlines() if line.startswith(wanted)]


def endpoint_events(log: Path, load_wall: float) -> list[str]:
    """The API's ejection and re-admission messages, with seconds since the load began."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if "ejected" not in line and "re-admitted" not in line:
            continue
        try:
            record = orjson.loads(line)
            when = datetime.fromisoformat(record["ts"]).timestamp() - load_wall
            out.append(f"t={when:.1f}s {record['msg'][:120]}")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            out.append(line[-160:])
    return out


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    redis = RedisServer()
    redis.start()
    ports = [free_port() for _ in range(args.standins)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TYPEAHEAD_")}
    env.update(REDIS_URL=redis.url, HF_HUB_OFFLINE="1",
               TYPEAHEAD_LLM_URL=",".join(f"http://{LOCAL}:{p}/v1" for p in ports),
               TYPEAHEAD_GENERATE_RATE_PER_MIN="0", TYPEAHEAD_GENERATE_REQUEST_RATE_PER_MIN="0")
    if args.inline_jobs is not None:
        env["TYPEAHEAD_GENERATE_INLINE_JOBS"] = str(args.inline_jobs)
    procs = Processes(work, env)
    api_port = free_port()
    base = f"http://{LOCAL}:{api_port}/"
    stop = threading.Event()
    try:
        for n, port in enumerate(ports):
            procs.start(f"standin{n}", standin_args(port))
        procs.start("api", ["-m", "typeahead", "serve", "--index", args.index, "--host", LOCAL,
                            "--port", str(api_port), "--workers", "1"])
        procs.start("worker", ["-m", "typeahead", "worker", "--index", args.index])
        wait_http(base + "readyz", timeout=120.0)
        for port in ports:
            wait_http(f"http://{LOCAL}:{port}/health", timeout=120.0)
        report = work / "report.json"
        cpu = CpuSampler(procs, redis, stop)
        cpu.sample()
        cpu.start()
        load = procs.start("loadtest", [
            "-m", "loadtest", "suite", "--target", base, "--duration", str(args.duration),
            "--rate", str(args.rate), "--generate-new-share", str(args.generate_new_share),
            "--procs", str(args.procs), "--report", str(report)])
        marks: dict[str, float] = {}
        threading.Thread(target=killer, args=(procs, ports[0], args, marks, stop),
                         daemon=True).start()
        code = load.wait()
        stop.set()
        cpu.join()
        metrics = metrics_lines(base)
    finally:
        stop.set()
        procs.stop()
        redis.stop()
    if not report.exists():
        raise SystemExit(f"the suite wrote no report; see {work / 'loadtest.log'}")
    return summarize(args, orjson.loads(report.read_bytes()), code, marks, cpu.by_role(),
                     metrics, endpoint_events(work / "api.log", marks.pop("load_wall", 0.0)),
                     work)


def summarize(args: argparse.Namespace, report: dict[str, Any], code: int,
              marks: dict[str, float], cpu: dict[str, float], metrics: list[str],
              events: list[str], work: Path) -> dict[str, Any]:
    classes = report["classes"]
    timeline = report["timeline"].get("suggest", [])
    windows: dict[str, float | None] = {"whole run": window_p99_ms(timeline, 0, 1e9)}
    if "kill" in marks:
        end = marks.get("restart", marks["kill"] + args.restart_after) + RESTART_SETTLE_S
        windows = {"before the kill": window_p99_ms(timeline, 0, marks["kill"]),
                   "kill to 5 s after the restart": window_p99_ms(timeline, marks["kill"], end),
                   "after": window_p99_ms(timeline, end, 1e9)}
    tail = (work / "loadtest.log").read_text(errors="replace").strip().splitlines()[-8:]
    suggest, cached = classes.get("suggest", {}), classes.get("generate_cached", {})
    return {
        "verdict": report["verdict"], "exit_code": code, "broken": report["broken"],
        "setup": {"standins": args.standins, "inline_jobs": args.inline_jobs,
                  "kill": not args.no_kill, "duration_s": args.duration, "procs": args.procs},
        "suggest_p50_ms": suggest.get("p50_us", 0) / 1000,
        "suggest_p99_ms": suggest.get("p99_us", 0) / 1000,
        "generate_cached_p99_ms": cached.get("p99_us", 0) / 1000,
        "requests": report["all"].get("count", 0), "errors": report["errors"],
        "generator_lag_p99_ms": report["generator_lag"].get("p99_us", 0) / 1000,
        "suggest_worst_second_p99_ms": windows, "marks_s": marks,
        "cpu_s_during_the_load": cpu, "suite": tail,
        "metrics": metrics, "endpoint_events": events,
        "logs": str(work) if args.keep else None,
    }


def main() -> int:
    args = build_parser().parse_args()
    if args.standins < 1 or (not args.no_kill and args.kill_at >= args.duration):
        raise SystemExit("need --standins >= 1 and --kill-at within --duration")
    if shutil.which("redis-server") is None:
        raise SystemExit("needs redis-server (apt-get install redis-server)")
    if not (ROOT / args.index / "manifest.json").exists():
        raise SystemExit(f"no index at {args.index}: run `make index`")
    work = Path(tempfile.mkdtemp(prefix="slo-llm-kill-"))
    try:
        summary = run(args, work)
    except RuntimeError as exc:  # a process of the stack did not come up
        raise SystemExit(f"{exc} (logs: {work}, kept with --keep)") from None
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    if args.json:
        args.json.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return int(summary["exit_code"])


if __name__ == "__main__":
    raise SystemExit(main())
