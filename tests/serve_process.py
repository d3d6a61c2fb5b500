"""A real ``typeahead serve`` process on a free port, for tests of the multi-worker server."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

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
