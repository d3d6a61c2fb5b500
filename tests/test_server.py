"""The real ``typeahead serve`` process: several workers on one port, restarted when killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import requests_shim as http
from tests.lexical_fixtures import build_small_index
from tests.redis_server import free_port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    index = build_small_index(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "typeahead", "serve", "--index", str(index.path),
         "--port", str(port), "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base)
        yield base, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def wait_ready(base: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if http.get(base + "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become ready")


def worker_pids(base: str, tries: int = 60) -> set[int]:
    pids: set[int] = set()
    for _ in range(tries):
        status, body = http.get(base + "/readyz")
        if status == 200:
            pids.add(int(body["pid"]))
    return pids


def test_workers_share_the_port_and_survive_a_killed_sibling(
        server: tuple[str, subprocess.Popen[bytes]]) -> None:
    base, _ = server
    pids = worker_pids(base)
    assert len(pids) == 2
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    # The survivor keeps answering at once.
    for _ in range(20):
        status, body = http.get(base + "/v1/suggest?q=new")
        assert status == 200 and body["suggestions"]
    # The supervisor starts a replacement.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = worker_pids(base, tries=20)
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.3)
    else:
        raise AssertionError("the killed worker was not replaced")


def test_sigterm_stops_everything(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    base, proc = server
    pids = worker_pids(base)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    time.sleep(0.5)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
