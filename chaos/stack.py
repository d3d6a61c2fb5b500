"""The system under test, as real processes on loopback, and the knobs to break it.

``Stack`` owns a ``redis-server`` (append-only file on, so a stop and start keeps what Redis
had acknowledged) or, with ``cluster``, a Redis Cluster of three primaries and three replicas
(``tests.redis_cluster``, the topology the cluster tests start), the vLLM stand-in (in this
process, so scenarios can steer it), ``typeahead serve --workers N``, and generation workers.
Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import redis.asyncio as aioredis
from aiohttp import web

from tests.redis_cluster import RedisCluster
from tests.redis_server import free_port
from tests.vllm_standin import StandIn
from typeahead import keys
from typeahead.generation.queue import layout_for, open_redis
from typeahead.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
LOCAL = "127.0.0.1"

# A small corpus: enough prefixes for a realistic keystroke mix, built in a second.
WORDS = ["new", "york", "times", "city", "weather", "paris", "london", "google", "maps",
         "amazon", "prime", "video", "music", "cheap", "flights", "hotel", "pizza", "near",
         "me", "river", "capital", "france", "history", "of", "the", "best", "recipes"]
DOCS = [
    {"id": "paris", "title": "Paris", "text": "Paris is the capital and largest city of France."},
    {"id": "rhine", "title": "Rhine", "text": "The Rhine flows from the Alps to the North Sea."},
    {"id": "oxygen", "title": "Oxygen", "text": "Oxygen is a chemical element with symbol O."},
]


def corpus_rows() -> list[tuple[str, int]]:
    rows = []
    for i, a in enumerate(WORDS):
        for j, b in enumerate(WORDS):
            if a != b and (i * 7 + j * 3) % 4 == 0:
                rows.append((f"{a} {b}", 3 + (i * 31 + j * 17) % 500))
    return rows


def prefixes(rows: list[tuple[str, int]]) -> list[str]:
    out: list[str] = []
    for text, _ in rows[:200]:
        out.extend(text[:n] for n in (2, 4, 6, len(text)))
    return out


def build_index(work: Path) -> Path:
    corpus = work / "corpus.tsv"
    rows = corpus_rows()
    corpus.write_text("query\tcount\n" + "".join(f"{q}\t{c}\n" for q, c in rows))
    (work / "prefixes.txt").write_text("\n".join(prefixes(rows)) + "\n")
    docs = work / "docs.jsonl"
    docs.write_bytes(b"\n".join(orjson.dumps(d) for d in DOCS) + b"\n")
    out = work / "index"
    subprocess.run([sys.executable, "-m", "typeahead", "build-index", "--corpus", str(corpus),
                    "--out", str(out), "--weight-col", "count", "--no-vectors", "--quiet"],
                   cwd=ROOT, check=True, env=_env({}))
    return out


INLINE_JOBS = 2
# Queue shards on a cluster: fewer than the default 16 keeps the readers per process (one per
# shard) in proportion to a 2-core stack, and still puts several shards on every primary.
CLUSTER_SHARDS = 8


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TYPEAHEAD_")}
    env.update(HF_HUB_OFFLINE="1", TYPEAHEAD_LOG_LEVEL="WARNING", **extra)
    return env


@dataclass
class Redis:
    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOCAL}:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("chaos needs the redis-server binary (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", LOCAL, "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir),
             "--maxclients", "10000", "--logfile", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
        _wait_port(self.port, up=False)


def _wait_port(port: int, *, up: bool, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((LOCAL, port), timeout=0.2):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not come {'up' if up else 'down'}")


@dataclass
class Stack:
    work: Path
    api_workers: int = 2
    gen_workers: int = 2
    job_deadline_s: float = 6.0
    standin: StandIn = field(default_factory=StandIn)
    cluster_mode: bool = False
    redis: Redis | None = None
    cluster: RedisCluster | None = None
    api: subprocess.Popen[bytes] | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    index: Path | None = None
    _standin_runner: web.AppRunner | None = None
    llm_url: str = ""

    @property
    def base(self) -> str:
        return f"http://{LOCAL}:{self.api_port}"

    @property
    def redis_url(self) -> str:
        """Every node of the cluster (so a process can start while one is down), or the Redis."""
        if self.cluster is not None:
            return self.cluster.urls
        assert self.redis is not None
        return self.redis.url

    def store_env(self) -> dict[str, str]:
        if self.cluster is None:
            return {"REDIS_URL": self.redis_url}
        return {"REDIS_URL": self.redis_url, "TYPEAHEAD_REDIS_CLUSTER": "true",
                "TYPEAHEAD_REDIS_QUEUE_SHARDS": str(CLUSTER_SHARDS)}

    def settings(self) -> Settings:
        """The store part of the processes' settings, for the driver's own client."""
        return Settings(redis_url=self.redis_url, redis_cluster=self.cluster is not None,
                        redis_queue_shards=CLUSTER_SHARDS)

    def store(self) -> tuple[aioredis.Redis, keys.Layout]:
        """A client of the store the processes use, and where their keys are in it."""
        settings = self.settings()
        return open_redis(settings, read_timeout_s=5.0), layout_for(settings)

    def env(self) -> dict[str, str]:
        return _env({
            **self.store_env(), "TYPEAHEAD_LLM_URL": self.llm_url,
            "TYPEAHEAD_GENERATE_RATE_PER_MIN": "0",  # the load is one client
            "TYPEAHEAD_GENERATE_REQUEST_RATE_PER_MIN": "0",
            "TYPEAHEAD_JOB_CLAIM_IDLE_S": "1.0",
            "TYPEAHEAD_JOB_DEADLINE_S": str(self.job_deadline_s),
            "TYPEAHEAD_LLM_READ_TIMEOUT_S": "30",
            # Two inline jobs per API process: a burst of jobs runs partly inline and partly
            # on the workers, so killing either kind of process loses something to recover.
            "TYPEAHEAD_GENERATE_INLINE_JOBS": str(INLINE_JOBS),
        })

    async def start(self) -> None:
        self.index = build_index(self.work)
        if self.cluster_mode:
            (self.work / "cluster").mkdir(exist_ok=True)
            self.cluster = RedisCluster(root=self.work / "cluster")
            await asyncio.to_thread(self.cluster.start)
        else:
            self.redis = Redis(self.work / "redis")
            self.redis.workdir.mkdir(exist_ok=True)
            self.redis.start()
        # Cancel a stalled stream when its client (a worker) hangs up, and do not wait for
        # stalls at shutdown.
        runner = web.AppRunner(self.standin.app(), access_log=None, handler_cancellation=True,
                               shutdown_timeout=1.0)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, LOCAL, port).start()
        self._standin_runner, self.llm_url = runner, f"http://{LOCAL}:{port}"
        self.api = self._spawn("api", self.api_args())
        for n in range(self.gen_workers):
            self.start_worker(f"w{n}")
        await self.wait_ready()

    def api_args(self) -> list[str]:
        return ["serve", "--index", str(self.index), "--host", LOCAL, "--port",
                str(self.api_port), "--workers", str(self.api_workers)]

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        return subprocess.Popen([sys.executable, "-m", "typeahead", *args], cwd=ROOT,
                                env=self.env(), stdout=log, stderr=log)

    def start_worker(self, name: str) -> None:
        self.workers[name] = self._spawn(name, ["worker", "--docs", str(self.work / "docs.jsonl"),
                                                "--name", name, "--concurrency", "4"])

    def kill_worker(self, name: str) -> None:
        proc = self.workers.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    async def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.api is not None
                if self.api.poll() is not None:
                    raise RuntimeError(f"typeahead serve exited; see {self.work / 'api.log'}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(self.base + "/readyz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"the API was not ready in {timeout:.0f} s; see {self.work}")

    async def stop(self) -> None:
        procs = [*self.workers.values(), *([self.api] if self.api else [])]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.redis is not None and self.redis.proc is not None:
            self.redis.stop()
        if self.cluster is not None:
            self.cluster.stop()  # removes its directory, node logs included
        if self._standin_runner is not None:
            await self._standin_runner.cleanup()

    def start_load(self, rate: float, out: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "chaos.load", "--target", self.base, "--rate", str(rate),
             "--queries", str(self.work / "prefixes.txt"), "--out", str(out)],
            cwd=ROOT, env=_env({}), stdout=subprocess.DEVNULL,
            stderr=open(self.work / "load.log", "ab"))


async def api_pids(base: str, tries: int = 40) -> set[int]:
    """The API worker processes, learnt from /readyz over fresh connections."""
    pids: set[int] = set()
    for _ in range(tries):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with s.get(base + "/readyz") as resp:
                    if resp.status == 200:
                        pids.add(int((await resp.json())["pid"]))
    return pids


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            kids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        new = {int(kid) for kid in kids} - found
        found |= new
        todo.extend(new)
    return found


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


