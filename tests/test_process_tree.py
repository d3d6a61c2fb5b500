"""Crash safety of the serve process tree: children die with a supervisor killed by SIGKILL,
and a new supervisor refuses to start beside a dead one's live children."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lexical_fixtures import build_small_index
from tests.redis_server import free_port
from tests.serve_process import start_serve, stop_serve
from tests.test_server import wait_ready
from typeahead.errors import ConfigError
from typeahead.process_tree import RunFile, alive

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="parent-death signals and /proc are Linux's")


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            kids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for kid in map(int, kids):
            if kid not in found:
                found.add(kid)
                todo.append(kid)
    return found


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = {pid for pid in pids if alive(pid)}
        if not left:
            return left
        time.sleep(0.05)
    return {pid for pid in pids if alive(pid)}


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_children_die_with_a_supervisor_killed_by_sigkill(tmp_path: Path) -> None:
    index = build_small_index(tmp_path)
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # generation on: embedded Redis and worker
    base, proc = start_serve(index.path, workers=2, env=env)
    children: set[int] = set()
    try:
        wait_ready(base, timeout=60)
        deadline = time.monotonic() + 30
        while len(children) < 4 and time.monotonic() < deadline:  # 2 API, redis, worker
            children = descendants(proc.pid)
            time.sleep(0.1)
        assert len(children) >= 4, children
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_gone(children, timeout=5) == set()
    finally:
        stop_serve(proc)
        for pid in children:  # the old behaviour left them running: do not leak them
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_run_file_refuses_live_orphans_of_a_dead_supervisor(tmp_path: Path) -> None:
    port = 8123
    orphan = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / f"{port}-1.json").write_text(json.dumps(
            {"supervisor": dead_pid(), "children": [orphan.pid]}))
        with pytest.raises(ConfigError, match=str(orphan.pid)):
            RunFile(port, tmp_path).claim()
        # Another port's run is not this one's business.
        RunFile(port + 1, tmp_path).claim()
    finally:
        orphan.kill()
        orphan.wait()
    # Once the orphans are gone, the stale record is forgotten and the new run recorded.
    run = RunFile(port, tmp_path)
    run.claim()
    assert [p.name for p in tmp_path.glob(f"{port}-*.json")] == [run.path.name]


def test_a_live_supervisor_is_left_alone(tmp_path: Path) -> None:
    """Two live supervisors on one port are a rolling restart, not orphans."""
    child = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "8124-1.json").write_text(json.dumps(
            {"supervisor": os.getpid(), "children": [child.pid]}))
        RunFile(8124, tmp_path).claim()
    finally:
        child.kill()
        child.wait()


def test_serve_refuses_to_start_beside_orphans(tmp_path: Path) -> None:
    index = build_small_index(tmp_path)
    port = free_port()
    runs = tmp_path / "typeahead-serve"
    runs.mkdir()
    orphan = subprocess.Popen(["sleep", "60"])
    try:
        (runs / f"{port}-1.json").write_text(json.dumps(
            {"supervisor": dead_pid(), "children": [orphan.pid]}))
        env = {**os.environ, "TMPDIR": str(tmp_path), "TYPEAHEAD_GENERATION": "false"}
        done = subprocess.run(
            [sys.executable, "-m", "typeahead", "serve", "--index", str(index.path),
             "--port", str(port), "--workers", "2"],
            env=env, capture_output=True, text=True, timeout=60)
    finally:
        orphan.kill()
        orphan.wait()
    assert done.returncode == 2, done.stderr
    assert f"processes {orphan.pid} of a supervisor that died" in done.stderr
    assert "Traceback" not in done.stderr
