"""Crash safety of ``typeahead serve``'s process tree.

* Every child (API workers, the embedded ``redis-server``, the generation worker) asks the
  kernel for SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``, Linux): a supervisor
  killed with ``kill -9`` cannot leave them serving beside its successor. The signal survives
  ``exec``, so it covers ``redis-server`` too. A child whose parent died before the request
  took effect exits at once.
* A supervisor records itself and its children in a run file (``RunFile``) under the system's
  temporary directory, one file per supervisor and port. A new supervisor refuses to start
  while a dead supervisor's children on its port are still alive (where the parent-death
  signal is unavailable, or a child survived it), naming their pids. A live supervisor's file
  is left alone: two live supervisors on one port are the documented rolling restart.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import tempfile
from pathlib import Path

import orjson

from typeahead.errors import ConfigError

PR_SET_PDEATHSIG = 1
RUN_DIR_NAME = "typeahead-serve"


def die_with_parent(expected_parent: int | None = None) -> None:
    """Ask for SIGKILL when the parent process dies (a no-op off Linux). Safe in a
    ``preexec_fn``: no allocation beyond the libc call."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)  # the parent is already gone: the signal will never come


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust the signal check
    return stat.rpartition(")")[2].split()[0] != "Z"


class RunFile:
    """``<tmp>/typeahead-serve/<port>-<supervisor pid>.json``: a supervisor and its children."""

    def __init__(self, port: int, root: Path | None = None) -> None:
        self.root = root or Path(tempfile.gettempdir()) / RUN_DIR_NAME
        self.port = port
        self.path = self.root / f"{port}-{os.getpid()}.json"

    def claim(self) -> None:
        """Refuse to start beside live orphans of a dead supervisor on this port; forget the
        files of dead runs; record this supervisor."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path in self.root.glob(f"{self.port}-*.json"):
            supervisor, children = _read(path)
            if supervisor is not None and alive(supervisor):
                continue  # a live supervisor (rolling restart): not ours to judge
            orphans = sorted(pid for pid in children if alive(pid))
            if orphans:
                raise ConfigError(
                    f"port {self.port}: processes {', '.join(map(str, orphans))} of a "
                    f"supervisor that died (pid {supervisor}) are still running; stop them "
                    f"(kill {' '.join(map(str, orphans))}) before starting a new one")
            path.unlink(missing_ok=True)
        self.record([])

    def record(self, children: list[int]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({"supervisor": os.getpid(), "children": children}))
        os.replace(tmp, self.path)

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def _read(path: Path) -> tuple[int | None, list[int]]:
    try:
        raw = orjson.loads(path.read_bytes())
        supervisor = raw["supervisor"]
        children = [pid for pid in raw["children"] if type(pid) is int and pid > 0]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None, []
    return (supervisor if type(supervisor) is int and supervisor > 0 else None), children
