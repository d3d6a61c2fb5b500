"""The real ``typeahead serve`` process: several workers on one port, restarted when killed."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import requests_shim as http
from tests.lexical_fixtures import build_small_index
from tests.serve_process import start_serve, stop_serve


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    index = build_small_index(tmp_path)
    base, proc = start_serve(index.path)
    try:
        wait_ready(base)
        yield base, proc
    finally:
        stop_serve(proc)


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


def api_workers(supervisor: int) -> set[int]:
    """PIDs of the supervisor's API worker processes (spawned by multiprocessing)."""
    found = set()
    for pid in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmd:
            found.add(int(pid))
    return found


def wait_for_workers(supervisor: int, n: int, *, without: int | None = None) -> set[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = api_workers(supervisor)
        if len(pids) == n and without not in pids:
            return pids
        time.sleep(0.2)
    raise AssertionError(f"expected {n} API workers, have {api_workers(supervisor)}")


def test_workers_share_the_port_and_survive_a_killed_sibling(
        server: tuple[str, subprocess.Popen[bytes]]) -> None:
    base, proc = server
    victim = min(wait_for_workers(proc.pid, 2))
    os.kill(victim, signal.SIGKILL)
    # The survivor keeps answering at once: the accept queue is shared, so no connection
    # waiting for the dead worker is lost.
    for _ in range(50):
        status, body = http.get(base + "/v1/suggest?q=new")
        assert status == 200 and body["suggestions"]
    # The supervisor starts a replacement.
    wait_for_workers(proc.pid, 2, without=victim)


def test_sigterm_stops_everything(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    _, proc = server
    pids = wait_for_workers(proc.pid, 2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    time.sleep(0.5)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize("workers", [1, 2])
def test_listen_backlog_is_the_configured_one(tmp_path: Path, workers: int) -> None:
    """aiohttp re-listens a given socket with its own backlog (128) unless told otherwise;
    bursts of new connections then overflowed it and waited 0.2-1 s for TCP retransmits."""
    if subprocess.run(["ss", "-V"], capture_output=True, check=False).returncode != 0:
        pytest.skip("iproute2's ss is not installed")
    index = build_small_index(tmp_path)
    env = {**os.environ, "TYPEAHEAD_LISTEN_BACKLOG": "777", "TYPEAHEAD_GENERATION": "false"}
    base, proc = start_serve(index.path, workers=workers, env=env)
    try:
        wait_ready(base)
        port = base.rsplit(":", 1)[1]
        out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True,
                             text=True, check=True).stdout
        # Listening sockets show their backlog as Send-Q (the third column).
        assert {line.split()[2] for line in out.splitlines()} == {"777"}
    finally:
        stop_serve(proc)
