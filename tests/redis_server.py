"""A real ``redis-server`` on a free port, owned by the test that starts it.

Tests may stop and restart it to inject faults. Falls back to ``REDIS_URL`` (no restarts) when
the ``redis-server`` binary is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    external_url: str | None = None
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="redis-test-"))

    @property
    def url(self) -> str:
        return self.external_url or f"redis://127.0.0.1:{self.port}/0"

    @property
    def can_restart(self) -> bool:
        return self.external_url is None

    def start(self) -> None:
        if self.external_url or (self.proc and self.proc.poll() is None):
            return
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.workdir, "--logfile", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._wait(up=True)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.proc = None
        self._wait(up=False)

    def pause(self) -> None:
        """Stall the server (SIGSTOP): connections stay open and nothing is answered."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def _wait(self, *, up: bool, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG") and up:
                        return
            except OSError:
                if not up:
                    return
            time.sleep(0.05)
        state = "up" if up else "down"
        raise RuntimeError(f"redis-server on port {self.port} did not come {state}")


def start_redis() -> RedisServer:
    if shutil.which("redis-server") is None:
        url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
        return RedisServer(external_url=url)
    server = RedisServer()
    server.start()
    return server
