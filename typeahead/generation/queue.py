"""The generation job queue on Redis Streams, and each job's record and token stream.

* One stream (``keys.QUEUE``) read by every worker through one consumer group. An entry is
  acknowledged (and deleted, so that the stream's length is the queue depth) only after the
  job's result is stored; an entry left pending by a dead worker is reclaimed with
  ``XAUTOCLAIM`` once idle for ``job_claim_idle_s``. Live workers keep their entries fresh.
  On a Redis Cluster the queue is ``redis_queue_shards`` such streams, each with its group;
  a job belongs to one shard (by its id), whose hash tag all its keys carry (``keys.Layout``).
* Job ids derive from the normalised query, the prompt version and the model, so identical
  requests share one job (single-flight): enqueueing is one Lua script that joins a queued or
  running job, returns a finished one, refuses when the queue is full, or enqueues.
* Every state change of a job is a Lua script guarded by the job's attempt counter, so a worker
  that was presumed dead and superseded can neither append tokens nor complete the job: a job
  completes exactly once.
* Each job has an event stream (token, reset, done, error). Listeners read it from the start,
  so a late joiner gets the text so far and then the rest. An API process follows every
  stream its clients watch with one multi-stream ``XREAD`` (``read_streams``) and checks the
  idle jobs' records in one pipeline (``endings``): see ``typeahead/generation/hub.py``.
* A job created for a listener (``submit(listen_s=...)``) is marked ``needs_listener``; a
  worker fails it (``cancel_unwatched``, or at ``start``) once its ``keys.listeners`` key has
  lapsed. Pre-warm submits with ``pin``: never cancelled this way.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import (
    ClusterDownError,
    ReadOnlyError,
    RedisClusterUnreachableError,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from typeahead import keys
from typeahead.errors import ServerError, ServiceUnavailable
from typeahead.normalize import normalize
from typeahead.numbers import parse_int
from typeahead.settings import Settings

T = TypeVar("T")

JOB_ID_CHARS = 32
STREAM_ID_DIGITS = 20  # each half of a stream id is below 2**64: at most 20 digits
SEND_TURNS = 3  # see let_send
# Commands of one process that wait for a pooled connection rather than fail at once when a
# burst (hundreds of event streams opening together) has every connection busy.
POOL_SIZE = 100
POOL_WAIT_S = 1.0
# The fields of a job record that say whether its event stream can still grow.
ENDING_FIELDS = ("status", "error", "result", "deadline")


async def let_send() -> None:
    """Let a request just started as a task (a Redis command, the LLM call) reach its socket
    before this task goes on with CPU work or a response of its own. Clients write a request
    only a few loop turns after it starts (measured for redis-py: after one turn the reply
    still came 0.35-0.42 ms after 1 ms of CPU work, after three 0.21 ms; for the LLM call,
    yielding before the 202 is written brought its arrival at the LLM 0.6 ms sooner)."""
    for _ in range(SEND_TURNS):
        await asyncio.sleep(0)


def job_id(query: str, prompt_version: str, model_id: str) -> str:
    """Deterministic id: identical (normalised) queries for one prompt and model coalesce."""
    material = "\x00".join((normalize(query), prompt_version, model_id)).encode()
    return hashlib.sha256(material).hexdigest()[:JOB_ID_CHARS]


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def valid_job_id(value: str) -> bool:
    return len(value) == JOB_ID_CHARS and all(c in "0123456789abcdef" for c in value)


def connect(url: str, *, read_timeout_s: float = 1.0) -> aioredis.Redis:
    """A client that fails fast when Redis is down and reconnects by itself when it is back.

    One immediate retry (no backoff) replaces a pooled connection that died with a restart;
    there is no reconnect loop, so a request never waits on a dead Redis. The pool is a
    blocking one: redis-py's default pool raises "Too many connections" beyond its cap, which
    would turn a burst of requests into 503s as if Redis were down.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=POOL_SIZE, timeout=POOL_WAIT_S, socket_connect_timeout=0.5,
        socket_timeout=read_timeout_s, retry=Retry(NoBackoff(), 1), health_check_interval=0,
    )
    return aioredis.Redis.from_pool(pool)


# Connections a cluster client may open to each node: event-stream readers hold one each.
CLUSTER_NODE_CONNECTIONS = 1000
# A cluster command that met a dead primary retries (refreshing the slot map) this often:
# about 1.5 s in all, so a worker rides out a short failover; the API's RedisGuard answers
# 503 long before.
CLUSTER_RETRIES = 6
SENTINEL_TIMEOUT_S = 0.5


def open_redis(settings: Settings, *, read_timeout_s: float = 1.0,
               url: str | None = None) -> aioredis.Redis:
    """A client for the configured store: a Redis Cluster (``redis_cluster``), the primary a
    set of Sentinels names (``redis_sentinels``), or the one Redis at ``url`` (default
    ``redis_url``). Every kind offers the same commands; callers need not tell them apart,
    except for the key layout (``layout_for``)."""
    if settings.redis_sentinels:
        return _sentinel_primary(settings, read_timeout_s)
    target = url or settings.redis_url
    if not target:
        raise ServiceUnavailable("no Redis configured (REDIS_URL or REDIS_SENTINELS)")
    if settings.redis_cluster:
        return _cluster(target, read_timeout_s)
    return connect(target, read_timeout_s=read_timeout_s)


def layout_for(settings: Settings) -> keys.Layout:
    """The key layout of the configured store: tagged and sharded on a cluster."""
    if settings.redis_cluster:
        return keys.Layout.cluster(settings.redis_queue_shards)
    return keys.PLAIN


def _cluster(url: str, read_timeout_s: float) -> aioredis.Redis:
    """A cluster client starting from the node(s) in ``url``: one URL, or several separated
    by commas, so that a process can start while one of them is down."""
    urls = [part.strip() for part in url.split(",") if part.strip()]
    parsed = [parse_url(part) for part in urls]
    nodes = [ClusterNode(str(p.get("host", "localhost")), int(p.get("port", 6379)))
             for p in parsed]
    auth: dict[str, Any] = {k: v for k, v in parsed[0].items() if k in ("username", "password")}
    client = RedisCluster(
        startup_nodes=nodes, ssl=urls[0].startswith("rediss://"),
        max_connections=CLUSTER_NODE_CONNECTIONS, socket_connect_timeout=0.5,
        socket_timeout=read_timeout_s, health_check_interval=0,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), CLUSTER_RETRIES), **auth,
    )
    # The cluster client offers the commands, scripts and pipelines used here with the same
    # signatures; one type keeps every caller unaware of the topology.
    return cast(aioredis.Redis, client)


def _sentinel_primary(settings: Settings, read_timeout_s: float) -> aioredis.Redis:
    """The service's primary, looked up through the Sentinels on every new connection: after
    a failover, the next command that finds its connection dead reconnects to the promoted
    replica (one immediate retry, as for a plain Redis)."""
    nodes = [(host, int(port)) for host, _, port in
             (address.rpartition(":") for address in settings.redis_sentinels)]
    auth: dict[str, Any] = {k: v for k, v in parse_url(settings.redis_url).items()
            if k in ("username", "password", "db")} if settings.redis_url else {}
    sentinel = Sentinel(nodes, socket_timeout=SENTINEL_TIMEOUT_S,
                        socket_connect_timeout=SENTINEL_TIMEOUT_S)
    return sentinel.master_for(
        settings.redis_sentinel_service, socket_timeout=read_timeout_s,
        socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 1), health_check_interval=0,
        connection_pool_class=_SentinelPool, **auth,
    )


class _SentinelPool(SentinelConnectionPool):
    """Closing the client closes its connections to the Sentinels too (redis-py leaves them
    open). A failover's partial disconnect (idle connections only) keeps them."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:
            for client in self.sentinel_manager.sentinels:
                await client.aclose()


# A guard's timer that fires later than this shows a busy event loop, not a silent Redis.
LOOP_LAG_S = 0.01
BURST_PATIENCE = 2  # a burst's calls wait this many further timeouts before they give up
# A cluster between a primary's death and its replica's promotion answers CLUSTERDOWN or
# TRYAGAIN, or has no node for a slot; a demoted primary refuses writes (READONLY).
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError,
              ClusterDownError, TryAgainError, ReadOnlyError, SlotNotCoveredError,
              RedisClusterUnreachableError)


class RedisGuard:
    """Maps Redis failures to 503, and fails fast for a moment after one (a circuit breaker).

    While open, requests are answered 503 without touching the network; afterwards the next
    request tries Redis again, so the API recovers without a restart.

    A call that has no answer after ``timeout_s`` while no other call got one since it
    started trips the breaker too: a Redis that accepts connections but does not answer
    (stopped, swapping, a full network buffer) is refused as fast as one that is gone,
    whatever the socket timeouts and retries beneath (which took 2 s). A call that is merely
    slow while others are answered (a burst queued on this event loop) keeps waiting.

    ``scope``: on a Redis Cluster, the queue shard a call's keys live in (``Jobs.scope``), so
    that a failed primary opens the breaker for its own shards only, not for the jobs and
    limits the other primaries hold. None (every call on one Redis) is one breaker of its own.
    """

    def __init__(self, open_s: float = 0.5, timeout_s: float | None = None) -> None:
        self.open_s = open_s
        self.timeout_s = timeout_s
        self._down_until: dict[int | None, float] = {}
        self._last_answer = 0.0  # when a guarded call last completed (monotonic)
        self._in_flight = 0

    async def __call__(self, make: Callable[[], Awaitable[T]], scope: int | None = None) -> T:
        if time.monotonic() < self._down_until.get(scope, 0.0):
            raise self._unavailable()
        try:
            result = await self._timed(make)
        except REDIS_DOWN as exc:
            self._down_until[scope] = time.monotonic() + self.open_s
            raise self._unavailable() from exc
        except RedisError as exc:
            raise ServerError(f"redis error: {exc}") from exc
        self._last_answer = time.monotonic()
        return result

    async def _timed(self, make: Callable[[], Awaitable[T]]) -> T:
        if self.timeout_s is None:
            return await make()
        started = time.monotonic()
        task = asyncio.ensure_future(make())
        self._in_flight += 1
        try:
            for patience in (1, BURST_PATIENCE):
                try:
                    return await asyncio.wait_for(asyncio.shield(task), self.timeout_s * patience)
                except TimeoutError:
                    if self._silent_since(started, patience):
                        raise  # nothing answered since this call went out: Redis is silent
            return await task  # Redis answers others: this process is busy, not Redis
        finally:
            self._in_flight -= 1
            if not task.done():
                task.cancel()

    def _silent_since(self, started: float, patience: int) -> bool:
        """Whether Redis answered nothing since ``started``, on a loop that was free to see
        an answer: the timer fired on time, and (the first time) few calls were pending. A
        burst of calls queued on this loop gets ``BURST_PATIENCE`` times longer."""
        waited = (self.timeout_s or 0.0) * (1 if patience == 1 else 1 + patience)
        late = time.monotonic() - started - waited
        quiet = patience > 1 or self._in_flight <= 2
        return self._last_answer <= started and late < LOOP_LAG_S and quiet

    @staticmethod
    def _unavailable() -> ServiceUnavailable:
        return ServiceUnavailable(
            "the generation store (Redis) is unreachable; retry shortly",
            code="dependency_unavailable", retry_after=1.0,
        )


# --- Lua: every job state change, atomic and attempt-guarded --------------------------------

# KEYS: job, tokens, queue, listeners, leases[, summary]. ARGV: id, query, now, deadline,
# max_depth, job_ttl, stale_grace, interest ("watch": cancel when unwatched, after grace_ms;
# "pin": never cancel, also for a job this call joins; "off": neither), grace_ms, owner, lease.
# With a sixth key, a cached summary there is the answer ('cached'): one round trip instead of
# a GET and then this script for a request that is not cached.
# A failed job (cancelled included) falls through to a fresh start, like a lost one.
# The queue entry carries the query too, so that a worker can retrieve the grounding
# documents while its start script is in flight.
# With an owner (an API process that runs the job itself), a new job starts at once as that
# owner's attempt 1 under a lease until ARGV[11] ('claimed'), instead of joining the queue;
# the queue's depth limit does not apply (the owner bounds its own inline jobs).
_ENQUEUE = """
if KEYS[6] then
  local cached = redis.call('GET', KEYS[6])
  if cached then return {'cached', cached} end
end
local st = redis.call('HGET', KEYS[1], 'status')
local now = tonumber(ARGV[3])
local function interest()
  if ARGV[8] == 'watch' then redis.call('SET', KEYS[4], '1', 'PX', ARGV[9]) end
end
if st == 'queued' or st == 'running' then
  local dl = tonumber(redis.call('HGET', KEYS[1], 'deadline') or '0')
  if dl + tonumber(ARGV[7]) > now then
    interest()
    if ARGV[8] == 'pin' then redis.call('HSET', KEYS[1], 'needs_listener', '0') end
    return {'joined', st}
  end
end
if st == 'done' then return {'done', redis.call('HGET', KEYS[1], 'result') or ''} end
local inline = ARGV[10] ~= ''
if not inline and redis.call('XLEN', KEYS[3]) >= tonumber(ARGV[5]) then return {'full', ''} end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[5], ARGV[1])
local needs = '0'
if ARGV[8] == 'watch' then needs = '1' end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'query', ARGV[2], 'status', 'queued',
  'created', ARGV[3], 'deadline', ARGV[4], 'attempt', 0, 'completions', 0,
  'needs_listener', needs)
redis.call('EXPIRE', KEYS[1], ARGV[6])
interest()
if inline then
  redis.call('HSET', KEYS[1], 'status', 'running', 'attempt', 1, 'worker', ARGV[10])
  redis.call('ZADD', KEYS[5], ARGV[11], ARGV[1])
  return {'claimed', 'running'}
end
redis.call('XADD', KEYS[3], '*', 'id', ARGV[1], 'q', ARGV[2])
return {'new', 'queued'}
"""

# KEYS: job, tokens, listeners. ARGV: worker, now, max_attempts, job_ttl, cancel_unwatched
# ("1": fail a job that needs a listener and has none, without calling the LLM), message.
# Returns the new attempt number, or 0 when there is nothing to do (gone, done, failed),
# or -1 when the job was failed here (deadline passed, too many attempts, nobody listening).
_START = """
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'queued' and st ~= 'running' then return 0 end
local function fail(msg)
  redis.call('HSET', KEYS[1], 'status', 'failed', 'error', msg)
  redis.call('XADD', KEYS[2], '*', 't', 'error', 'd', msg)
  redis.call('EXPIRE', KEYS[2], ARGV[4])
  return -1
end
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], 'deadline')) then
  return fail('deadline exceeded before a worker could finish the job')
end
if ARGV[5] == '1' and redis.call('HGET', KEYS[1], 'needs_listener') == '1'
    and redis.call('EXISTS', KEYS[3]) == 0 then
  return fail(ARGV[6])
end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
if attempt > tonumber(ARGV[3]) then return fail('gave up after ' .. ARGV[3] .. ' attempts') end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1])
if attempt > 1 then
  redis.call('XADD', KEYS[2], '*', 't', 'reset', 'd', tostring(attempt))
end
redis.call('EXPIRE', KEYS[2], ARGV[4])
return attempt
"""

# _START, then the job's record: a worker's first round trip for a job.
_BEGIN = (
    "local function start()\n" + _START + "\nend\n"
    + "return {start(), redis.call('HGETALL', KEYS[1])}\n"
)

# KEYS: job, tokens. ARGV: attempt, piece.
_TOKEN = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('XADD', KEYS[2], '*', 't', 'token', 'd', ARGV[2])
return 1
"""

# KEYS: job, tokens. ARGV: attempt, then (event id, piece) pairs: an inline job's tokens, under
# the ids its process already gave them when it handed them to its own listeners.
_TOKENS_AT = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
for i = 2, #ARGV, 2 do
  redis.call('XADD', KEYS[2], ARGV[i], 't', 'token', 'd', ARGV[i + 1])
end
return 1
"""

# KEYS: job, tokens, summary, leases. ARGV: attempt, result_json, cache_ttl, job_ttl, event id
# ('*' unless the caller numbers its events).
_COMPLETE = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'done', 'result', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'completions', 1)
redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[3])
redis.call('XADD', KEYS[2], ARGV[5], 't', 'done', 'd', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('ZREM', KEYS[4], redis.call('HGET', KEYS[1], 'id') or '')
return 1
"""

# KEYS: job, tokens, leases. ARGV: attempt, message, job_ttl.
_FAIL = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[2])
redis.call('XADD', KEYS[2], '*', 't', 'error', 'd', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[3], redis.call('HGET', KEYS[1], 'id') or '')
return 1
"""

# KEYS: leases, queue, then each candidate's job key. ARGV: now, then each candidate's id.
# Inline jobs whose lease expired (their API process died or stalled) go on the queue, where a
# worker's start script makes the next attempt (and a reset event) as for any reclaimed job.
# The expiry is checked again here: a lease renewed since the caller listed it stays.
# Returns how many were queued.
_REQUEUE_EXPIRED = """
local queued = 0
for i = 3, #KEYS do
  local id = ARGV[i - 1]
  local until_ = redis.call('ZSCORE', KEYS[1], id)
  if until_ and tonumber(until_) <= tonumber(ARGV[1]) then
    redis.call('ZREM', KEYS[1], id)
    local h = redis.call('HMGET', KEYS[i], 'status', 'query')
    if h[1] == 'running' or h[1] == 'queued' then
      redis.call('XADD', KEYS[2], '*', 'id', id, 'q', h[2] or '')
      queued = queued + 1
    end
  end
end
return queued
"""


# KEYS: (job, tokens, listeners) for each job. ARGV: message, job_ttl, then each job's attempt.
# Fails every job still running that attempt, marked as needing a listener, whose listeners
# key is gone; returns their positions (1-based). Checking and failing in one script means a
# POST that joins the job in between finds it either alive (and keeps it) or failed (and
# starts it afresh), never half-cancelled.
_CANCEL_UNWATCHED = """
local out = {}
local n = 0
for i = 1, #KEYS, 3 do
  n = n + 1
  local h = redis.call('HMGET', KEYS[i], 'attempt', 'status', 'needs_listener')
  if h[1] == ARGV[2 + n] and h[2] == 'running' and h[3] == '1'
      and redis.call('EXISTS', KEYS[i + 2]) == 0 then
    redis.call('HSET', KEYS[i], 'status', 'failed', 'error', ARGV[1])
    redis.call('XADD', KEYS[i + 1], '*', 't', 'error', 'd', ARGV[1])
    redis.call('EXPIRE', KEYS[i], ARGV[2])
    redis.call('EXPIRE', KEYS[i + 1], ARGV[2])
    out[#out + 1] = n
  end
end
return out
"""


@dataclass(frozen=True, slots=True)
class Submission:
    """What enqueueing produced: a new or joined job, a finished result, or a full queue."""

    outcome: str  # "new", "joined", "done", "cached", "full", "claimed" (run it yourself)
    status: str
    result: dict[str, Any] | None = None
    created: float = 0.0  # when the call was made (a claimed job's creation time)


@dataclass(frozen=True, slots=True)
class Entry:
    """A queue entry: its id, the job's id and (entries written since it was added) the query,
    a hint only: the job's record holds the query that counts."""

    id: str
    job: str
    query: str = ""
    shard: int = 0  # the queue shard it was read from


def _json_object(raw: str) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _entry(eid: Any, fields: dict[Any, Any], shard: int) -> Entry:
    return Entry(_text(eid), _text(fields.get(b"id", b"")), _text(fields.get(b"q", b"")), shard)


@dataclass(frozen=True, slots=True)
class Event:
    id: str  # the event stream entry id, usable as an SSE id / Last-Event-ID
    type: str  # "token", "reset", "done", "error"
    data: str


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def stream_id(value: str) -> tuple[int, int] | None:
    """A stream entry id ("ms-seq", or "ms") as a comparable pair; None when malformed."""
    ms, _, seq = value.partition("-")
    try:  # a Last-Event-ID header is client input: the one strict parser, bounded length
        pair = (parse_int(ms, max_digits=STREAM_ID_DIGITS),
                parse_int(seq, max_digits=STREAM_ID_DIGITS) if seq else 0)
    except ValueError:
        return None
    return pair if max(pair) < 2**64 else None


def _events(entries: Any) -> list[Event]:
    out: list[Event] = []
    for entry_id, fields in entries or ():
        f = {_text(k): v for k, v in fields.items()}
        out.append(Event(_text(entry_id), _text(f.get("t", b"")), _text(f.get("d", b""))))
    return out


class Jobs:
    """The Redis protocol of the job queue, shared by the API and the workers.

    ``layout`` says where the keys are: on a cluster, all of a job's keys, its queue shard
    and that shard's leases share one hash slot, so every script below stays in one slot."""

    def __init__(self, redis: aioredis.Redis, *, job_ttl_s: int = keys.JOB_TTL_S,
                 layout: keys.Layout = keys.PLAIN) -> None:
        self.redis = redis
        self.job_ttl_s = job_ttl_s
        self.layout = layout
        self._enqueue = redis.register_script(_ENQUEUE)
        self._start = redis.register_script(_START)
        self._begin = redis.register_script(_BEGIN)
        self._token = redis.register_script(_TOKEN)
        self._tokens_at = redis.register_script(_TOKENS_AT)
        self._requeue_expired = redis.register_script(_REQUEUE_EXPIRED)
        self._complete = redis.register_script(_COMPLETE)
        self._fail = redis.register_script(_FAIL)
        self._cancel_unwatched = redis.register_script(_CANCEL_UNWATCHED)

    # --- API side ---------------------------------------------------------------------------

    async def submit(
        self, job: str, query: str, *, deadline_s: float, max_depth: int,
        listen_s: float = 0.0, pin: bool = False, check_cache: bool = False,
        owner: str = "", lease_s: float = 0.0,
    ) -> Submission:
        """Create, join or find the job. ``listen_s > 0``: the caller is a listener, and the
        job may be cancelled once nobody has listened for that long. ``pin``: the job must
        never be cancelled for want of listeners (pre-warm), even one this call joins.
        ``check_cache``: a cached summary is returned as outcome "cached" (same round trip).
        ``owner``: a new job is not queued but started as ``owner``'s attempt 1 under a lease
        of ``lease_s`` (outcome "claimed"); the owner must run it and renew the lease."""
        now = time.time()
        interest = "pin" if pin else "watch" if listen_s > 0 else "off"
        lay, shard = self.layout, self.layout.shard(job)
        names = [lay.job(job), lay.tokens(job), lay.queue(shard), lay.listeners(job),
                 lay.leases(shard)]
        if check_cache:
            names.append(lay.summary(job))
        # The depth limit holds for each shard's share of the queue.
        shard_depth = -(-max_depth // lay.shards)
        outcome, detail = await self._enqueue(
            keys=names,
            args=[job, query, now, now + deadline_s, shard_depth, self.job_ttl_s,
                  keys.STALE_GRACE_S, interest, _ms(listen_s), owner, now + lease_s],
        )
        outcome, detail = _text(outcome), _text(detail)
        if outcome == "cached":
            result = _json_object(detail)
            if result is not None:
                return Submission("cached", "done", result)
            # A corrupt cache entry is a miss, never a 500: submit past it.
            return await self.submit(job, query, deadline_s=deadline_s, max_depth=max_depth,
                                     listen_s=listen_s, pin=pin, owner=owner, lease_s=lease_s)
        if outcome == "done":
            return Submission("done", "done", orjson.loads(detail) if detail else None)
        return Submission(outcome, detail or outcome, created=now)

    async def record(self, job: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self.layout.job(job))
        return {_text(k): _text(v) for k, v in raw.items()}

    def scope(self, job: str) -> int | None:
        """The circuit-breaker scope of a job's calls (``RedisGuard``): its shard on a cluster."""
        return self.layout.shard(job) if self.layout.shards > 1 else None

    async def depth(self) -> int:
        """Entries in the queue (all shards): waiting or being worked on."""
        if self.layout.shards == 1:
            return int(await self.redis.xlen(self.layout.queue(0)))
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in range(self.layout.shards):
                pipe.xlen(self.layout.queue(shard))
            return sum(int(n) for n in await pipe.execute())

    async def events_since(self, job: str, after: str, *, listen_s: float = 0.0) -> list[Event]:
        """Every event after stream id ``after`` ("0-0": from the start), without waiting.
        With ``listen_s``, also mark the job as listened to for that long (same round trip)."""
        low = "-" if after == "0-0" else f"({after}"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xrange(self.layout.tokens(job), min=low, max="+")
            if listen_s > 0:
                pipe.set(self.layout.listeners(job), b"1", px=_ms(listen_s))
            replies = await pipe.execute()
        return _events(replies[0])

    async def listen(self, job: str, listen_s: float) -> None:
        """Someone wants this job's answer: keep it from being cancelled for ``listen_s``."""
        await self.redis.set(self.layout.listeners(job), b"1", px=_ms(listen_s))

    async def read_streams(
        self, cursors: dict[str, str], *, block_ms: int, count: int = 512,
    ) -> dict[str, list[Event]]:
        """One blocking ``XREAD`` over many streams: stream key -> events after its cursor.
        On a cluster the streams must share a hash slot (one shard's)."""
        streams: dict[Any, Any] = dict(cursors)
        reply: Any = await self.redis.xread(streams, count=count, block=block_ms)
        return {_text(stream): _events(entries) for stream, entries in reply or ()}

    async def endings(
        self, jobs: list[str], *, listened: Sequence[str] = (), listen_s: float = 0.0,
    ) -> list[dict[str, str]]:
        """The ``ENDING_FIELDS`` of many job records in one round trip ({} for a missing one).
        The same round trip marks every job in ``listened`` as listened to for ``listen_s``."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                pipe.hmget(self.layout.job(job), ENDING_FIELDS)
            if listen_s > 0:
                for job in listened:
                    pipe.set(self.layout.listeners(job), b"1", px=_ms(listen_s))
            replies = await pipe.execute()
        return [{k: _text(v) for k, v in zip(ENDING_FIELDS, values, strict=True) if v is not None}
                for values in replies[: len(jobs)]]

    async def wake(self, stream: str, ttl_s: int) -> None:
        """Append to a wake-up stream, so that an ``XREAD`` blocked on it returns now."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(stream, {"w": "1"}, maxlen=1, approximate=False)
            pipe.expire(stream, ttl_s)
            await pipe.execute()

    # --- worker side ------------------------------------------------------------------------

    async def ensure_group(self, shard: int = 0) -> None:
        try:
            # Id 0: a group (re)created after Redis lost it still sees entries added meanwhile.
            await self.redis.xgroup_create(self.layout.queue(shard), keys.GROUP, id="0",
                                           mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, consumer: str, *, count: int, block_ms: int,
                   shard: int = 0) -> list[Entry]:
        """New entries of one queue shard for this consumer."""
        reply: Any = await self.redis.xreadgroup(
            keys.GROUP, consumer, {self.layout.queue(shard): ">"}, count=count, block=block_ms,
        )
        return [_entry(eid, fields, shard)
                for _s, entries in reply or () for eid, fields in entries]

    async def reclaim(
        self, consumer: str, *, min_idle_s: float, count: int, shard: int = 0,
    ) -> list[Entry]:
        """Entries of one shard pending longer than min_idle_s on any consumer (presumed
        dead) become ours."""
        queue = self.layout.queue(shard)
        reply: Any = await self.redis.xautoclaim(
            queue, keys.GROUP, consumer, int(min_idle_s * 1000), "0-0", count=count,
        )
        claimed, deleted = reply[1], (reply[2] if len(reply) > 2 else [])
        if deleted:
            await self.redis.xack(queue, keys.GROUP, *deleted)
        return [_entry(eid, fields, shard) for eid, fields in claimed if fields is not None]

    async def touch(self, consumer: str, entry: str, shard: int = 0) -> None:
        """Reset an entry's idle time: this worker is alive and still on it."""
        await self.redis.xclaim(self.layout.queue(shard), keys.GROUP, consumer, 0, [entry],
                                justid=True)

    async def ack(self, entry: str, shard: int = 0) -> None:
        queue = self.layout.queue(shard)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(queue, keys.GROUP, entry)
            pipe.xdel(queue, entry)
            await pipe.execute()

    async def start(
        self, job: str, consumer: str, *, max_attempts: int = keys.MAX_ATTEMPTS,
        cancel_unwatched: bool = False,
    ) -> int:
        return int(await self._start(
            keys=[self.layout.job(job), self.layout.tokens(job), self.layout.listeners(job)],
            args=[consumer, time.time(), max_attempts, self.job_ttl_s,
                  "1" if cancel_unwatched else "0", keys.UNWATCHED_ERROR],
        ))

    async def begin(
        self, job: str, consumer: str, *, cancel_unwatched: bool = False,
    ) -> tuple[int, dict[str, str]]:
        """``start`` and the job's record after it, in one round trip (one script)."""
        reply: Any = await self._begin(
            keys=[self.layout.job(job), self.layout.tokens(job), self.layout.listeners(job)],
            args=[consumer, time.time(), keys.MAX_ATTEMPTS, self.job_ttl_s,
                  "1" if cancel_unwatched else "0", keys.UNWATCHED_ERROR],
        )
        flat = reply[1] or []
        record = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
        return int(reply[0]), record

    async def cancel_unwatched(self, running: Sequence[tuple[str, int]]) -> list[bool]:
        """Fail each (job, attempt) still running that needs a listener and has none, in one
        script call; True where this call failed it (the caller then stops generating)."""
        by_shard: dict[int, list[int]] = {}
        for n, (job, _) in enumerate(running):
            by_shard.setdefault(self.layout.shard(job), []).append(n)
        cancelled = [False] * len(running)
        for positions in by_shard.values():  # one script per hash slot
            group = [running[n] for n in positions]
            for i, flag in enumerate(await self._cancel_group(group)):
                cancelled[positions[i]] = flag
        return cancelled

    async def _cancel_group(self, running: Sequence[tuple[str, int]]) -> list[bool]:
        lay = self.layout
        names = [k for job, _ in running for k in (lay.job(job), lay.tokens(job),
                                                   lay.listeners(job))]
        reply: Any = await self._cancel_unwatched(
            keys=names,
            args=[keys.UNWATCHED_ERROR, self.job_ttl_s, *(attempt for _, attempt in running)],
        )
        failed = {int(n) for n in reply or ()}
        return [n in failed for n in range(1, len(running) + 1)]

    async def token(self, job: str, attempt: int, piece: str) -> bool:
        reply = await self._token(keys=[self.layout.job(job), self.layout.tokens(job)],
                                  args=[attempt, piece])
        return bool(reply)

    async def tokens_at(self, job: str, attempt: int, events: Sequence[tuple[str, str]]) -> bool:
        """Store (event id, piece) tokens of an inline job in order; False: not its attempt."""
        flat = [part for event in events for part in event]
        reply = await self._tokens_at(keys=[self.layout.job(job), self.layout.tokens(job)],
                                      args=[attempt, *flat])
        return bool(reply)

    async def complete(self, job: str, attempt: int, result: bytes, *, cache_ttl_s: int,
                       event_id: str = "*") -> bool:
        return bool(await self._complete(
            keys=[self.layout.job(job), self.layout.tokens(job), self.layout.summary(job),
                  self.layout.leases(self.layout.shard(job))],
            args=[attempt, result, cache_ttl_s, self.job_ttl_s, event_id],
        ))

    async def fail(self, job: str, attempt: int, message: str) -> bool:
        return bool(await self._fail(
            keys=[self.layout.job(job), self.layout.tokens(job),
                  self.layout.leases(self.layout.shard(job))],
            args=[attempt, message, self.job_ttl_s],
        ))

    # --- leases of inline jobs ----------------------------------------------------------------

    async def renew(self, jobs: Sequence[str], lease_s: float) -> None:
        """Extend the leases of the inline jobs this process is running (only those still
        leased: one that was requeued meanwhile belongs to the queue now)."""
        if not jobs:
            return
        until = time.time() + lease_s
        by_shard: dict[int, list[str]] = {}
        for job in jobs:
            by_shard.setdefault(self.layout.shard(job), []).append(job)
        for shard, group in by_shard.items():
            await self.redis.zadd(self.layout.leases(shard), dict.fromkeys(group, until), xx=True)

    async def requeue_expired(self, *, count: int, shard: int = 0) -> int:
        """Put up to ``count`` inline jobs of one shard whose lease expired on its queue; how
        many went."""
        now = time.time()
        leases = self.layout.leases(shard)
        expired: Any = await self.redis.zrangebyscore(leases, "-inf", now, start=0, num=count)
        ids = [_text(job) for job in expired or ()]
        if not ids:
            return 0
        return int(await self._requeue_expired(
            keys=[leases, self.layout.queue(shard), *(self.layout.job(job) for job in ids)],
            args=[now, *ids],
        ))
