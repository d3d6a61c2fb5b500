"""Test helper: ``loadtest.testserver`` in a subprocess on a free port.

A separate process keeps the server off the generator's event loop and GIL, as in real use.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from tests.redis_server import free_port


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def running_server(*flags: str) -> Iterator[str]:
    """Base URL (with a trailing slash) of a running test server."""
    port = free_port()
    cmd = [sys.executable, "-m", "loadtest.testserver", "--port", str(port), *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/"
        wait_http(base + "readyz")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)
