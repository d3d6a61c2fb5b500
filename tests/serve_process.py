"""A real ``typeahead serve`` process on a free port, for tests of the multi-worker server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests import requests_shim as http
from tests.redis_server import free_port


def start_serve(index: Path, *, workers: int = 2, env: dict[str, str] | None = None
                ) -> tuple[str, subprocess.Popen[bytes]]:
    """Start the server (not yet ready); returns its base URL and the supervisor process."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "typeahead", "serve", "--index", str(index),
         "--port", str(port), "--workers", str(workers)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return f"http://127.0.0.1:{port}", proc


@contextlib.contextmanager
def serving(index: Path, workers: int = 2, **env: str
            ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A server with every worker ready, stopped on exit. Its environment is this process's
    plus ``env``, less an operator's PROMETHEUS_MULTIPROC_DIR (a test server keeps its own
    samples)."""
    environ = {**os.environ, **env}
    environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    base, proc = start_serve(index, workers=workers, env=environ)
    try:
        wait_all_ready(base, workers)
        yield base, proc
    finally:
        stop_serve(proc)


def stop_serve(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def wait_all_ready(base: str, workers: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(worker_states(base, 20)) == workers:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not become ready")


def worker_states(base: str, tries: int = 40) -> dict[int, tuple[str, int]]:
    """pid -> (index path, entries) as each worker reports it."""
    states: dict[int, tuple[str, int]] = {}
    for _ in range(tries):
        status, body = http.get(base + "/readyz")
        if status == 200:
            states[int(body["pid"])] = (body["index"]["path"], body["index"]["entries"])
    return states
