"""Real Redis topologies on localhost, owned by the test that starts them: a Redis Cluster of
three primaries and three replicas, and a primary with a replica watched by three Sentinels.

Every server runs in its own temporary directory with persistence off. Timeouts are short
(a primary is declared failed after ``NODE_TIMEOUT_MS``), so a failover completes within a
few seconds. ``cluster_support`` says why a topology cannot be started here, if it cannot.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.redis_server import free_port

# A cluster node also listens on its port + 10000 (the cluster bus), so ports stay below this.
HIGHEST_NODE_PORT = 55535
NODE_TIMEOUT_MS = 1000  # cluster-node-timeout and Sentinel's down-after-milliseconds
SERVICE = "typeahead-test"


def cluster_support() -> str | None:
    """None when redis-server and redis-cli can run a cluster here, else the reason."""
    for binary in ("redis-server", "redis-cli"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed"
    probe = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                           check=False)
    if probe.returncode != 0:
        return "redis-server does not run"
    return None


def _cli(port: int, *args: str, timeout: float = 5.0) -> str:
    out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                         timeout=timeout, check=False)
    return out.stdout


def _wait(what: str, ok: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(ok) and ok():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


@dataclass
class Node:
    port: int
    workdir: Path
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--logfile",
             str(self.workdir / "redis.log"), "--repl-diskless-sync-delay", "0", *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait(f"redis on {self.port}", lambda: _cli(self.port, "ping").strip() == "PONG")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to the replicas (a crashed machine)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def node_port() -> int:
    """A free port whose cluster-bus port (+10000) is free too."""
    while True:
        port = random.randint(20000, HIGHEST_NODE_PORT)
        if _bindable(port) and _bindable(port + 10000):
            return port


def _node(root: Path, name: str, *args: str) -> Node:
    workdir = root / name
    workdir.mkdir()
    return Node(node_port(), workdir, list(args))


@dataclass
class RedisCluster:
    """Three primaries and three replicas (``redis-cli --cluster create --cluster-replicas 1``)."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="redis-cluster-")))
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Any one node: the client discovers the rest."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    @property
    def urls(self) -> str:
        """Every node, comma-separated: a new client starts while some are down."""
        return ",".join(f"redis://127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> None:
        for n in range(6):
            node = _node(self.root, f"n{n}", "--cluster-enabled", "yes",
                         "--cluster-config-file", "nodes.conf",
                         "--cluster-node-timeout", str(NODE_TIMEOUT_MS))
            self.nodes.append(node)
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas",
                        "1", "--cluster-yes"], capture_output=True, check=True, timeout=60)
        _wait("the cluster to be ready", self.ready, timeout=60)

    def ready(self) -> bool:
        """Every live node sees the cluster as ok, with all slots served by three live
        primaries, and every live replica has synced with its primary (a replica that never
        did cannot be promoted)."""
        live = [n for n in self.nodes if n.alive]
        if any("cluster_state:ok" not in _cli(n.port, "cluster", "info") for n in live):
            return False
        roles = {n.port: _cli(n.port, "info", "replication") for n in live}
        primaries = [p for p, info in roles.items() if "role:master" in info]
        replicas = [info for info in roles.values() if "role:slave" in info]
        return len(primaries) == 3 and all("master_link_status:up" in r for r in replicas)

    def primaries(self) -> list[Node]:
        return [n for n in self.nodes if n.alive
                and "role:master" in _cli(n.port, "info", "replication")]

    def primary_of(self, slot: int) -> Node:
        for line in _cli(self.nodes[0].port, "cluster", "nodes").splitlines():
            parts = line.split()
            if "master" not in parts[2] or "fail" in parts[2]:
                continue
            for span in parts[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
                    return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no primary serves slot {slot}")

    def replica_of(self, primary: Node) -> Node:
        info = _cli(primary.port, "info", "replication")
        for line in info.splitlines():
            if line.startswith("slave0:"):
                port = int(line.split("port=")[1].split(",")[0])
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"primary on {primary.port} has no replica")

    def is_primary(self, node: Node) -> bool:
        return "role:master" in _cli(node.port, "info", "replication")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class SentinelSet:
    """A primary, one replica and three Sentinels (quorum 2) watching service ``SERVICE``."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="redis-sentinel-")))
    primary: Node | None = None
    replica: Node | None = None
    sentinels: list[Node] = field(default_factory=list)

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def start(self) -> None:
        self.primary = _node(self.root, "primary")
        self.primary.start()
        self.replica = _node(self.root, "replica", "--replicaof", "127.0.0.1",
                             str(self.primary.port))
        self.replica.start()
        primary = self.primary
        _wait("the replica to sync", lambda: "master_link_status:up" in _cli(
            self.replica.port if self.replica else 0, "info", "replication"))
        for n in range(3):
            workdir = self.root / f"sentinel{n}"
            workdir.mkdir()
            config = workdir / "sentinel.conf"
            config.write_text(
                f"port 0\nsentinel monitor {SERVICE} 127.0.0.1 {primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {NODE_TIMEOUT_MS}\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n")
            node = Node(free_port(), workdir, [])
            node.proc = subprocess.Popen(
                ["redis-server", str(config), "--sentinel", "--port", str(node.port),
                 "--bind", "127.0.0.1", "--dir", str(workdir), "--logfile",
                 str(workdir / "sentinel.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.sentinels.append(node)
        _wait("the sentinels to see each other and the replica", self._watching)

    def _watching(self) -> bool:
        for s in self.sentinels:
            out = _cli(s.port, "sentinel", "master", SERVICE)
            lines = out.splitlines()
            fields = dict(zip(lines[::2], lines[1::2], strict=False))
            if fields.get("num-other-sentinels") != "2" or fields.get("num-slaves") != "1":
                return False
        return True

    def primary_port(self) -> int:
        """The primary's port as the first Sentinel reports it now."""
        out = _cli(self.sentinels[0].port, "sentinel", "get-master-addr-by-name", SERVICE)
        return int(out.split()[1])

    def stop(self) -> None:
        for node in [*self.sentinels, self.replica, self.primary]:
            if node is not None:
                node.stop()
        shutil.rmtree(self.root, ignore_errors=True)
