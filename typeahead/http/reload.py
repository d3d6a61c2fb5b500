"""Hot reload of the index: ``POST /admin/reload`` (token-protected) and SIGHUP.

A reload loads the new index *completely* (manifest, checksums, every structure) off the
event loop, and only then swaps the service holder's reference: one assignment, so every
request sees either the old index or the new one, never a mix, and none fails. A new index
that does not load is refused with the loader's one-line reason while the old one keeps
serving.

With several API processes (``typeahead serve --workers N``) the supervisor owns a small
control directory. The process that receives the POST validates and switches first, records
the new target there (atomically, with a sequence number) and asks the supervisor (SIGUSR1) to
send SIGHUP to every worker; each worker re-reads the target, switches, and writes an
acknowledgement, which the POST waits for (a bounded time) before it answers. A worker
restarted later starts on the recorded target, not the directory it was first given. SIGHUP
sent by an operator to the supervisor gives the current target a new sequence number, so
every worker re-reads it the same way (point a
symlink at a new build, then ``kill -HUP``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hmac
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from typeahead import metrics
from typeahead.errors import (
    ClientError,
    Forbidden,
    InvalidBody,
    InvalidParameter,
    TypeaheadError,
    Unauthorized,
)
from typeahead.settings import Settings
from typeahead.suggest import SuggestService

log = logging.getLogger("typeahead.reload")

TARGET_FILE = "index-target.json"
LOCK_FILE = "reload.lock"
# How long a reload waits for every worker to follow, and for an earlier reload to finish
# (reloads run one at a time across the fleet); past either it answers 409.
ACK_WAIT_S = 15.0
LOCK_WAIT_S = 15.0
# A worker asks the supervisor to signal every worker with this; SIGHUP to the supervisor
# means "re-read the current target" (an operator's reload).
BROADCAST_SIGNAL = signal.SIGUSR1
Loader = Callable[[Settings, Path], SuggestService]


class IndexRejected(ClientError):
    """The named index did not load; the old one keeps serving."""

    status = 422
    code = "index_rejected"


class ReloadConflict(ClientError):
    """Another reload holds the fleet, or the workers did not all follow this one."""

    status = 409
    code = "reload_conflict"


@dataclass(frozen=True)
class Target:
    index: Path
    seq: int


class ReloadControl:
    """The supervisor's shared directory: the current target and each worker's ack."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def read_target(self) -> Target | None:
        try:
            raw = orjson.loads((self.root / TARGET_FILE).read_bytes())
            return Target(Path(raw["index"]), int(raw["seq"]))
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    @contextlib.asynccontextmanager
    async def exclusive(self, wait_s: float = LOCK_WAIT_S) -> AsyncIterator[None]:
        """One reload at a time across every worker (an flock on the control directory's
        lock file): two overlapping reloads each waited for acks the other's target had
        superseded, hung for a minute and left the workers on different indexes."""
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + wait_s
            while not _try_lock(fd):
                if time.monotonic() > deadline:
                    raise ReloadConflict("another reload is still in progress; retry shortly")
                await asyncio.sleep(0.02)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def write_target(self, index: Path) -> Target:
        # Generation numbers only grow, even if the clock steps back between two reloads.
        current = self.read_target()
        target = Target(index, max(time.time_ns(), current.seq + 1 if current else 0))
        tmp = self.root / f".{TARGET_FILE}.{os.getpid()}"
        tmp.write_bytes(orjson.dumps({"index": str(index), "seq": target.seq}))
        os.replace(tmp, self.root / TARGET_FILE)  # readers see the old or the new, whole
        return target

    def ack(self, seq: int, error: str | None) -> None:
        tmp = self.root / f".ack-{os.getpid()}"
        tmp.write_bytes(orjson.dumps({"seq": seq, "error": error}))
        os.replace(tmp, self.root / f"ack-{os.getpid()}.json")

    def live_workers(self) -> set[int]:
        """Workers that are alive (per the supervisor) and have their SIGHUP handler set."""
        try:
            live = {int(p) for p in (self.root / "workers").read_text().split()}
        except (OSError, ValueError):
            return set()
        return {pid for pid in live if (self.root / f"ready-{pid}").exists()}

    def mark_ready(self) -> None:
        (self.root / f"ready-{os.getpid()}").touch()

    def forget(self, pid: int) -> None:
        for name in (f"ready-{pid}", f"ack-{pid}.json"):
            (self.root / name).unlink(missing_ok=True)

    def acks(self, seq: int) -> tuple[set[int], dict[int, str]]:
        """(pids on ``seq`` or later, {pid: error} for those that refused it)."""
        done: set[int] = set()
        failed: dict[int, str] = {}
        for path in self.root.glob("ack-*.json"):
            try:
                pid = int(path.stem[4:])
                raw = orjson.loads(path.read_bytes())
            except (OSError, ValueError, orjson.JSONDecodeError):
                continue
            if int(raw.get("seq", 0)) >= seq:
                done.add(pid)
                if raw.get("error"):
                    failed[pid] = str(raw["error"])
        return done, failed

    def write_workers(self, pids: list[int]) -> None:
        tmp = self.root / ".workers"
        tmp.write_text(" ".join(map(str, pids)))
        os.replace(tmp, self.root / "workers")


class Reloader:
    """Swaps the app's service for one built from a new index directory."""

    def __init__(self, settings: Settings, holder: Any, loader: Loader,
                 control: ReloadControl | None = None) -> None:
        self.settings = settings
        self.holder = holder
        self.loader = loader
        self.control = control
        self.index_dir = settings.index_dir
        self.seq = 0
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """The fleet's reload lock (with one process, the switch's own lock suffices)."""
        if self.control is None:
            yield
            return
        async with self.control.exclusive():
            yield

    def initial_dir(self) -> Path:
        """Where a (re)started worker loads from: the last reload's target, if any."""
        target = self.control.read_target() if self.control else None
        if target is not None:
            self.index_dir, self.seq = target.index, target.seq
        return self.index_dir

    async def switch(self, index_dir: Path) -> SuggestService:
        """Load ``index_dir`` fully, then swap; IndexRejected (old kept) if it does not load."""
        async with self._lock:
            try:
                service = await asyncio.to_thread(self.loader, self.settings, index_dir)
            except TypeaheadError as exc:
                metrics.get().reload_outcome(False)
                log.error("reload refused", extra={"index": str(index_dir), "reason": exc.message})
                raise IndexRejected(f"index {index_dir} refused, still serving "
                                    f"{self.index_dir}: {exc.message}") from exc
            await self.holder.install(service)  # the atomic switch
            self.index_dir = index_dir
            metrics.get().reload_outcome(True)
            record_index(service)
            log.info("index reloaded", extra={"index": str(index_dir),
                                              "entries": service.index.entries})
            return service

    async def on_sighup(self) -> None:
        """Follow the control directory's target, or (one process) re-read the same directory."""
        if self.control is None:
            with contextlib.suppress(IndexRejected):
                await self.switch(self.index_dir)
            return
        target = self.control.read_target()
        if target is None or target.seq == self.seq:
            return  # nothing new (this process made the change itself)
        error = None
        try:
            await self.switch(target.index)
        except IndexRejected as exc:
            error = exc.message
        self.seq = target.seq
        self.control.ack(target.seq, error)

    async def ready(self) -> None:
        """Called once SIGHUP is handled: announce it, then catch up on a missed target."""
        if self.control is not None:
            self.control.mark_ready()
            await self.on_sighup()

    async def broadcast(self, index_dir: Path) -> dict[str, Any]:
        """After a local switch: make every sibling worker follow, and wait for them."""
        if self.control is None:
            return {"workers": 1, "switched": 1}
        target = self.control.write_target(index_dir)
        self.seq = target.seq
        self.control.ack(target.seq, None)
        os.kill(os.getppid(), BROADCAST_SIGNAL)
        deadline = time.monotonic() + ACK_WAIT_S
        while True:
            expected = self.control.live_workers() or {os.getpid()}
            done, failed = self.control.acks(target.seq)
            if expected <= done or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        report: dict[str, Any] = {"workers": len(expected), "switched": len(done & expected)
                                  - len(set(failed) & expected)}
        if failed:
            report["errors"] = {str(pid): msg for pid, msg in failed.items()}
        return report


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


RELOADER = web.AppKey("reloader", Reloader)


def record_index(service: SuggestService) -> None:
    index = getattr(service, "index", None)  # a placeholder service has none yet
    if index is None:
        return
    build = index.manifest.get("build_seconds")
    metrics.get().index_loaded(index.entries, float(build) if build is not None else None,
                               index.load_seconds)
    safety = index.manifest.get("safety")
    if isinstance(safety, dict) and isinstance(safety.get("by_category"), dict):
        metrics.get().index_screened({str(c): int(n) for c, n in safety["by_category"].items()
                                      if isinstance(n, int)})


# --- the route ------------------------------------------------------------------------------


def _errors(report: dict[str, Any]) -> str:
    errors = report.get("errors") or {}
    if not errors:
        return "the others did not answer in time"
    return "; ".join(f"worker {pid}: {msg}" for pid, msg in sorted(errors.items()))


def check_token(request: web.Request, expected: str | None) -> None:
    """401 without a token, 403 with a wrong one (or when no token is configured).

    The one admin check: every ``/admin/*`` route calls it (``require_admin``)."""
    header = request.headers.get("Authorization", "")
    scheme, _, supplied = header.partition(" ")
    supplied = supplied.strip()
    if scheme.lower() != "bearer" or not supplied:
        raise Unauthorized("admin token required: send Authorization: Bearer TOKEN")
    if not supplied.isascii():
        # A bearer token is ASCII (RFC 6750 token68); aiohttp hands other bytes over as
        # surrogate escapes, which must not reach an encoder.
        raise Unauthorized("the admin token must be ASCII: send Authorization: Bearer TOKEN")
    if not expected:
        raise Forbidden("admin endpoints are disabled: set TYPEAHEAD_ADMIN_TOKEN",
                        code="admin_disabled")
    # Constant-time over bytes: the comparison must not reveal how much of a guess was right.
    if not hmac.compare_digest(supplied.encode("ascii"), expected.encode("utf-8")):
        raise Forbidden("wrong admin token")


def require_admin(request: web.Request) -> None:
    """The admin-token check for any ``/admin/*`` handler of this app (raises 401/403)."""
    check_token(request, request.app[RELOADER].settings.admin_token)


async def requested_dir(request: web.Request, default: Path) -> Path:
    raw = await request.read()
    if not raw.strip():
        return default
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody("request body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise InvalidBody('request body must be a JSON object like {"index": "DIR"}')
    index = body.get("index")
    if index is None:
        return default
    if not isinstance(index, str) or not index.strip() or "\x00" in index:
        raise InvalidParameter('"index" must be a directory path')
    return Path(index)


async def admin_reload(request: web.Request) -> web.Response:
    reloader = request.app[RELOADER]
    require_admin(request)
    index_dir = await requested_dir(request, reloader.index_dir)
    async with reloader.exclusive():
        service = await reloader.switch(index_dir)
        report = await reloader.broadcast(index_dir)
    if report["switched"] != report["workers"]:
        # Last writer wins: the recorded target is this index, and a worker restarted later
        # loads it; but right now the fleet is split, and the caller must know.
        raise ReloadConflict(f"index {index_dir} is loaded by {report['switched']} of "
                             f"{report['workers']} workers: {_errors(report)}")
    index = service.index
    body = {"status": "reloaded", "index": {"path": str(index.path), "entries": index.entries,
                                            "built_at": index.manifest.get("built_at")},
            **report}
    return web.Response(body=orjson.dumps(body), content_type="application/json")
