"""``typeahead serve``: the HTTP API in one or several processes on one port.

With ``--workers N`` a small supervisor starts N processes that each bind the port with
SO_REUSEPORT (the kernel spreads connections) and map the same index files, so the index is in
memory once. The supervisor restarts a worker that dies, relays reloads (SIGHUP from an
operator, SIGUSR1 from a worker that took ``POST /admin/reload``; see ``typeahead.http.reload``)
and stops them all on SIGTERM/SIGINT.

It also owns a run directory: ``control/`` for reloads and ``metrics/``, the
``PROMETHEUS_MULTIPROC_DIR`` every process writes its samples to, so that ``GET /metrics`` on
any worker shows the totals of all of them (``typeahead.metrics``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from typeahead import logs, metrics
from typeahead.errors import ConfigError
from typeahead.http.app import create_app, load_service
from typeahead.http.connection import Site
from typeahead.http.fastpath import KeystrokeSite, untested_aiohttp
from typeahead.http.reload import BROADCAST_SIGNAL, RELOADER, ReloadControl
from typeahead.numbers import int_arg
from typeahead.process_tree import RunFile, die_with_parent
from typeahead.settings import Settings

log = logging.getLogger("typeahead.server")
RESTART_BACKOFF_S = 1.0


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="run the HTTP API", description="Run the HTTP API.")
    p.add_argument("--index", type=Path, default=None, help="index directory")
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int_arg(), default=None, help="port (default 8080)")
    p.add_argument("--workers", type=int_arg(), default=None, help="worker processes (default 1)")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings.from_env(index_dir=args.index, host=args.host, port=args.port,
                             workers=args.workers)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    configure_logging(settings)
    # Fail fast, with one line, on a missing or broken index before any process starts.
    load_service(settings)
    if settings.workers == 1:
        serve_one(settings, None)
        return 0
    if settings.port == 0:
        raise ConfigError("--workers > 1 needs a fixed --port (they share it)")
    with contextlib.ExitStack() as stack:
        run_file = RunFile(settings.port)
        run_file.claim()  # refuses to start beside a killed supervisor's live children
        stack.callback(run_file.release)
        rundir = stack.enter_context(run_directory())
        helpers: list[int] = []
        if settings.generation and not settings.uses_redis:
            # Several API processes must see one job queue: share one embedded Redis and run
            # one generation worker beside them (a single process embeds its own instead).
            settings = stack.enter_context(embedded_generation(settings, helpers))
        return Supervisor(settings, rundir / "control", run_file, helpers).run()


@contextlib.contextmanager
def run_directory() -> Iterator[Path]:
    """The supervisor's run directory; sets PROMETHEUS_MULTIPROC_DIR before any child starts.

    An operator's own PROMETHEUS_MULTIPROC_DIR is honoured (and emptied of old samples).
    """
    root = Path(tempfile.mkdtemp(prefix="typeahead-run-"))
    (root / "control").mkdir()
    preset = os.environ.get(metrics.MULTIPROC_ENV)
    metrics_dir = Path(preset) if preset else root / "metrics"
    metrics.prepare_multiprocess_dir(metrics_dir)
    os.environ[metrics.MULTIPROC_ENV] = str(metrics_dir)
    try:
        yield root
    finally:
        if preset is None:
            os.environ.pop(metrics.MULTIPROC_ENV, None)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def embedded_generation(settings: Settings, pids: list[int] | None = None
                        ) -> Iterator[Settings]:
    """An embedded redis-server and one generation worker; their pids go to ``pids``."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ConfigError("no REDIS_URL and no redis-server binary: set REDIS_URL or "
                          "TYPEAHEAD_GENERATION=false")
    workdir = Path(tempfile.mkdtemp(prefix="typeahead-redis-"))
    sock = workdir / "redis.sock"
    redis = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no",
         "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent)
    worker = None
    try:
        _wait_for(sock)
        url = f"unix://{sock}"
        env = {**os.environ, "REDIS_URL": url}
        worker = subprocess.Popen([sys.executable, "-m", "typeahead", "worker", "--index",
                                   str(settings.index_dir)], env=env, preexec_fn=die_with_parent)
        if pids is not None:
            pids.extend((redis.pid, worker.pid))
        yield settings.replace(redis_url=url)
    finally:
        for proc in (worker, redis):
            if proc is not None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_for(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise ConfigError("the embedded redis-server did not start")
        time.sleep(0.05)


def configure_logging(settings: Settings) -> None:
    logs.configure(settings)


def bind_socket(host: str, port: int, *, reuse_port: bool, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot bind {host}:{port}: {exc.strerror}") from exc
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def serve_one(settings: Settings, sock: socket.socket | None = None,
              control: Path | None = None) -> None:
    """Run one API process until SIGTERM/SIGINT; SIGHUP reloads the index.

    ``sock`` is the supervisor's listening socket, shared by every worker."""
    runner = _event_loop_runner()
    runner(_serve(settings, sock=sock, control=control))


def _event_loop_runner() -> Any:
    try:
        import uvloop
    except ImportError:  # uvloop is optional (not on every platform)
        return asyncio.run
    return uvloop.run


def site_class(settings: Settings) -> type[Site]:
    """The keystroke fast path when it is on and aiohttp is the version it is tested with."""
    if not settings.suggest_fast_path:
        return Site
    reason = untested_aiohttp()
    if reason is not None:
        log.warning(reason)
        return Site
    return KeystrokeSite


async def _serve(settings: Settings, *, sock: socket.socket | None,
                 control: Path | None = None) -> None:
    if sock is None:
        # Before anything starts: a busy port is one line, not the tracebacks of resources
        # (Redis, a worker) torn down half-started.
        sock = bind_socket(settings.host, settings.port, reuse_port=False,
                           backlog=settings.listen_backlog)
    app = create_app(settings, reload_control=control)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    # The site listens again with its own backlog (aiohttp's default is 128, which bursts of
    # new keystroke connections overflowed): pass ours.
    site = site_class(settings)(runner, sock, backlog=settings.listen_backlog)
    await site.start()
    host, port = sock.getsockname()[:2]
    log.info("typeahead serving on http://%s:%s (pid %s)", host, port, os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloader = app[RELOADER]
    reloads: set[asyncio.Task[None]] = set()

    def on_hup() -> None:
        task = asyncio.create_task(reloader.on_sighup())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await reloader.ready()
    # Everything loaded so far lives as long as the process: keep it out of the cyclic GC's
    # scans, which would otherwise walk it on every collection and stall requests.
    gc.collect()
    gc.freeze()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _worker_main(settings: Settings, sock: socket.socket, control: Path | None,
                 supervisor: int | None = None) -> None:
    die_with_parent(supervisor)  # a killed supervisor takes its workers with it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when to stop
    # Until the event loop handles it, a reload signal must not kill a starting worker (it
    # loads the current target anyway and catches up once ready).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    configure_logging(settings)
    serve_one(settings, sock, control)


class Supervisor:
    def __init__(self, settings: Settings, control: Path | None = None,
                 run_file: RunFile | None = None, helpers: list[int] | None = None) -> None:
        self.settings = settings
        self.run_file = run_file
        self.helpers = helpers or []  # embedded redis-server and generation worker
        self.control_dir = control
        self.control = ReloadControl(control) if control is not None else None
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: dict[int, Any] = {}
        self.stopping = False

    def run(self) -> int:
        # One listening socket (one accept queue) inherited by every worker: when a worker
        # dies, connections waiting to be accepted stay queued for the others, where a socket
        # per worker would take its queue down with it (the kernel resets those). SO_REUSEPORT
        # stays on so a second supervisor can bind beside this one for a rolling restart.
        self.sock = bind_socket(self.settings.host, self.settings.port, reuse_port=True,
                                backlog=self.settings.listen_backlog)
        try:
            signal.signal(signal.SIGTERM, self._stop)
            signal.signal(signal.SIGINT, self._stop)
            signal.signal(signal.SIGHUP, self._operator_reload)
            signal.signal(BROADCAST_SIGNAL, self._forward)
            for wid in range(self.settings.workers):
                self._start(wid)
            self._watch()
        finally:
            self._terminate_all()
            self.sock.close()
        return 0

    def _start(self, wid: int) -> None:
        proc = self.ctx.Process(target=_worker_main,
                                args=(self.settings, self.sock, self.control_dir, os.getpid()),
                                name=f"typeahead-api-{wid}", daemon=True)
        proc.start()
        self.procs[wid] = proc
        pids = [p.pid for p in self.procs.values() if p.pid]
        if self.control is not None:
            self.control.write_workers(pids)
        if self.run_file is not None:
            self.run_file.record(self.helpers + pids)

    def _watch(self) -> None:
        while not self.stopping:
            time.sleep(0.2)
            for wid, proc in list(self.procs.items()):
                if not proc.is_alive() and not self.stopping:
                    log.warning("api worker %s (pid %s) exited with %s; restarting",
                                wid, proc.pid, proc.exitcode)
                    self._forget(proc.pid)
                    time.sleep(RESTART_BACKOFF_S / 4)
                    self._start(wid)

    def _forget(self, pid: int | None) -> None:
        if pid is None:
            return
        metrics.mark_dead(pid)
        if self.control is not None:
            self.control.forget(pid)

    def _stop(self, *_: Any) -> None:
        self.stopping = True

    def _operator_reload(self, *_: Any) -> None:
        """SIGHUP: every worker re-reads the current target (a symlink may point elsewhere)."""
        if self.control is not None:
            current = self.control.read_target()
            self.control.write_target(current.index if current else self.settings.index_dir)
        self._forward()

    def _forward(self, *_: Any) -> None:
        for proc in self.procs.values():
            if proc.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGHUP)

    def _terminate_all(self) -> None:
        for proc in self.procs.values():
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs.values():
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
