"""``python -m loadtest suite``: the standard SLO suite against a freshly started service.

Starts ``typeahead serve`` and one ``typeahead worker`` on the embedded defaults, waits for
``/readyz``, generates one summary so that cached generate traffic exists, runs keystroke
sessions at 1,000 req/s against ``suggest.p99<5ms``, ``generate_cached.p99<10ms`` and
``errors<0.1%``, prints the verdict and stops the processes. ``--target`` runs the suite
against a service that is already up instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from loadtest.errors import ServiceError
from typeahead.numbers import float_arg, int_arg
from typeahead.sse import read_events

SUITE_SLOS = ("suggest.p99<5ms", "generate_cached.p99<10ms", "errors<0.1%")
SERVE_COMMAND = "{python} -m typeahead serve --index {index} --port {port} --workers {workers}"
WORKER_COMMAND = "{python} -m typeahead worker --index {index}"
# The suite is one client sending tens of generates a second: the per-client generate limits
# would turn them into 429s, so the service it starts runs without them.
SERVICE_ENV = {"TYPEAHEAD_GENERATE_RATE_PER_MIN": "0",
               "TYPEAHEAD_GENERATE_REQUEST_RATE_PER_MIN": "0"}


def add_parser(sub: Any) -> None:
    from loadtest.cli import add_load_options

    p = sub.add_parser("suite", help="start the service and run the standard SLO suite")
    p.add_argument("--index", default="indexes/aol", help="index directory for serve/worker")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int_arg(1, 65535), default=8080)
    p.add_argument("--workers", type=int_arg(1, 64), default=1, help="serve --workers")
    p.add_argument("--target", help="use this running service instead of starting one")
    p.add_argument("--serve-command", default=SERVE_COMMAND,
                   help="template with {python} {index} {port} {workers}")
    p.add_argument("--worker-command", default=WORKER_COMMAND, help="empty: start no worker")
    p.add_argument("--ready-timeout", type=float_arg(0.1), default=120.0,
                   help="seconds for /readyz")
    p.add_argument("--prewarm-query", default="weather",
                   help="generated once before the run; cached generate clicks use it")
    p.add_argument("--prewarm-timeout", type=float_arg(0.1), default=120.0)
    add_load_options(p, rate=1000.0, duration=30.0)
    p.set_defaults(func=run, generate_share=0.05, no_follow_streams=True)


def run(args: argparse.Namespace) -> int:
    from loadtest.command import build_plan, publish, run_once

    args.slo = list(SUITE_SLOS)
    args.generate_query = [args.prewarm_query]
    args.find_capacity = False
    with _service(args) as base:
        asyncio.run(_prewarm(base, args.prewarm_query, args.prewarm_timeout))
        plan = build_plan(args, base)
        print(f"loadtest suite: {args.rate:g} req/s for {args.duration:g}s against {base}; "
              f"SLOs: {' '.join(SUITE_SLOS)}", file=sys.stderr)
        report, stats = run_once(plan)
    return publish(report, stats, args)


@contextmanager
def _service(args: argparse.Namespace) -> Iterator[str]:
    if args.target:
        yield args.target.rstrip("/") + "/"
        return
    base = f"http://{args.host}:{args.port}/"
    values = {"python": shlex.quote(sys.executable), "index": shlex.quote(args.index),
              "port": str(args.port), "workers": str(args.workers)}
    with tempfile.TemporaryDirectory(prefix="loadtest-suite-") as tmp:
        procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        env = {**os.environ, **SERVICE_ENV}
        commands = [("serve", args.serve_command), ("worker", args.worker_command)]
        if "REDIS_URL" not in env and args.worker_command.strip():
            # A separate worker needs a Redis it shares with the API: start a private one.
            port = _free_port()
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            commands.insert(0, ("redis", f"redis-server --port {port} --bind 127.0.0.1 "
                                         "--save '' --appendonly no"))
        try:
            for name, template in commands:
                if template.strip():
                    log = Path(tmp) / f"{name}.log"
                    procs.append((name, _start(template.format(**values), log, env), log))
            _wait_ready(base, procs, args.ready_timeout)
            yield base
        finally:
            for _, proc, _ in procs:
                _stop(proc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(command: str, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        try:
            return subprocess.Popen(shlex.split(command), stdout=out, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        except OSError as exc:
            raise ServiceError(f"cannot start {command!r}: {exc.strerror}") from exc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_ready(base: str, procs: list[tuple[str, subprocess.Popen[bytes], Path]],
                timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc, log in procs:
            if proc.poll() is not None:
                raise ServiceError(f"{name} exited with code {proc.returncode}: {_tail(log)}")
        if asyncio.run(_ready(base)):
            return
        time.sleep(0.25)
    raise ServiceError(f"the service at {base} was not ready within {timeout:g}s")


async def _ready(base: str) -> bool:
    try:
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as s, s.get(base + "readyz") as resp:
            return resp.status == 200
    except (aiohttp.ClientError, OSError, TimeoutError):
        return False


def _tail(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "(no output)"


async def _prewarm(base: str, query: str, timeout: float) -> None:
    """Generates ``query`` once (following its stream), then checks that it is now cached."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            answer = await _post_generate(s, base, query)
            if answer.get("cached") is True:
                return
            await _read_until_done(s, base + str(answer.get("stream_url", "")).lstrip("/"))
            answer = await _post_generate(s, base, query)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise ServiceError(f"prewarm of {query!r} failed: {exc or type(exc).__name__}") from exc
    if answer.get("cached") is not True:
        raise ServiceError(f"prewarm of {query!r} finished but the query is not cached")


async def _post_generate(s: aiohttp.ClientSession, base: str, query: str) -> dict[str, Any]:
    async with s.post(base + "v1/generate", json={"query": query}) as resp:
        if resp.status not in (200, 202):
            raise ServiceError(f"prewarm: POST /v1/generate answered {resp.status}")
        answer = await resp.json(content_type=None)
    if not isinstance(answer, dict):
        raise ServiceError("prewarm: POST /v1/generate did not answer a JSON object")
    return answer


async def _read_until_done(s: aiohttp.ClientSession, url: str) -> None:
    async with s.get(url) as resp:
        if resp.status != 200:
            raise ServiceError(f"prewarm: the generate stream answered {resp.status}")
        async for event in read_events(resp.content):
            if event.event == "done":
                return
            if event.event == "error":
                raise ServiceError("prewarm: the generation failed (event: error)")
    raise ServiceError("prewarm: the generate stream ended without event: done")
