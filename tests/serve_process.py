"""A real ``typeahead serve`` process on a free port, for tests of the multi-worker server."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
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
