"""Per-client rate limits on ``POST /v1/generate``, shared by every API process through Redis.

A client (an API key or an address, see ``typeahead.http.limits.Limits.client_key``) has two
budgets, each a token bucket of ``rate`` tokens a minute holding at most ``rate``:

- **jobs** (``generate_rate_per_min``): requests that start a generation job, the ones that cost
  an LLM call. A token is reserved before the job is submitted and given back when the request
  turns out to cost nothing (it joined a job already running, or found the answer cached), so
  concurrent requests can never spend more than the bucket holds. A client whose job budget is
  spent still gets answers that exist: a cached summary, or a job that is running.
- **requests** (``generate_request_rate_per_min``, generous): every POST, cached answers
  included; it bounds what a client can make the API do for free.

Both buckets live in Redis hashes changed only by one Lua script that reads Redis's own clock,
so every process and replica spends from the same buckets and the hosts' clocks do not matter.
A client's two buckets share a hash tag (``typeahead.keys.rate_bucket``): one call serves both,
on a Redis Cluster too.

While Redis is down or silent (the circuit breaker of ``TYPEAHEAD_REDIS_TIMEOUT_S``), each
process decides from its own buckets of the same size: the limit is then per process.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from typeahead import keys, metrics
from typeahead.errors import RateLimited, ServerError, ServiceUnavailable
from typeahead.settings import Settings

Guard = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]

log = logging.getLogger(__name__)

MAX_CLIENTS = 100_000  # fallback buckets kept per process; the least recently seen go first
REQUESTS = "requests"
JOBS = "jobs"

# KEYS: the client's requests bucket, its jobs bucket. ARGV: for each bucket in turn, its rate
# (tokens a second), its capacity and the cost to spend (0: leave it; negative: give back).
# The jobs bucket is touched only when the request is allowed. Returns, per bucket, the
# seconds to wait before its cost could be spent ("0": spent). Floats go back as strings
# because Redis truncates Lua numbers to integers.
_SPEND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function spend(key, rate, cap, cost)
  if cost == 0 or rate <= 0 then return 0 end
  local v = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(v[1]) or cap
  local at = tonumber(v[2]) or now
  if now > at then tokens = math.min(cap, tokens + (now - at) * rate) end
  local wait = 0
  if cost > tokens then wait = (cost - tokens) / rate else tokens = math.min(cap, tokens - cost) end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('PEXPIRE', key, math.ceil(cap / rate * 1000) + 1000)
  return wait
end
local waited = spend(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
local job = 0
if waited == 0 then
  job = spend(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
end
return {tostring(waited), tostring(job)}
"""


class TokenBucket:
    """``rate_per_min`` tokens a minute per key, up to a burst of ``burst``; 0 means no limit.

    One process's buckets: the fallback while Redis is down."""

    def __init__(self, rate_per_min: int, *, burst: int | None = None,
                 max_keys: int = MAX_CLIENTS) -> None:
        self.rate_per_s = rate_per_min / 60.0
        self.burst = float(burst if burst is not None else max(1, rate_per_min))
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        """Spend one token: 0.0 when allowed, else the seconds until one is available."""
        if self.rate_per_s <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens = self._refilled(key, now)
        if tokens >= 1.0:
            self._store(key, tokens - 1.0, now)
            return 0.0
        self._store(key, tokens, now)
        return (1.0 - tokens) / self.rate_per_s

    def give(self, key: str, now: float | None = None) -> None:
        """Give back a token that ``take`` spent."""
        if self.rate_per_s > 0:
            now = time.monotonic() if now is None else now
            self._store(key, min(self.burst, self._refilled(key, now) + 1.0), now)

    def _refilled(self, key: str, now: float) -> float:
        tokens, last = self._buckets.pop(key, (self.burst, now))
        return min(self.burst, tokens + max(0.0, now - last) * self.rate_per_s)

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)  # re-inserted last: most recently seen
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(frozen=True, slots=True)
class Ticket:
    """The answer to a job-token reservation for ``client``, made in Redis (``shared``) or in
    this process: granted, or refused for ``wait_s`` more seconds."""

    client: str
    shared: bool
    wait_s: float = 0.0

    @property
    def granted(self) -> bool:
        return self.wait_s <= 0


class ClientLimits:
    """The two budgets of every client; ``redis`` calls go through ``guard`` (the circuit
    breaker), and a refused or failed call falls back to this process's buckets."""

    def __init__(self, settings: Settings, redis: Any, guard: Guard) -> None:
        self.request_rate = settings.generate_request_rate_per_min
        self.job_rate = settings.generate_rate_per_min
        self.local = {REQUESTS: TokenBucket(self.request_rate), JOBS: TokenBucket(self.job_rate)}
        self.guard = guard
        self._script = redis.register_script(_SPEND)

    async def admit(self, client: str) -> None:
        """Spend a request token: 429 ``rate_limited`` when none is left."""
        if self.request_rate > 0:
            waits, _ = await self._spend(client, 1, 0)
            self._check_requests(waits[0])

    async def admit_and_reserve(self, client: str) -> Ticket:
        """``admit`` and ``reserve`` in one round trip."""
        if self.job_rate <= 0:
            await self.admit(client)
            return Ticket(client, shared=False)
        waits, shared = await self._spend(client, 1 if self.request_rate > 0 else 0, 1)
        self._check_requests(waits[0])
        return Ticket(client, shared, waits[1])

    def _check_requests(self, wait_s: float) -> None:
        if wait_s > 0:
            _refused(REQUESTS)
            raise RateLimited(
                f"too many generate requests: the limit is {self.request_rate} a minute per "
                f"client, cached answers included; retry in {wait_s:.0f} s", retry_after=wait_s)

    async def reserve(self, client: str) -> Ticket:
        """Try to reserve a job token for ``client``; a ticket not ``granted`` says how long
        its job budget stays spent."""
        if self.job_rate <= 0:
            return Ticket(client, shared=False)
        waits, shared = await self._spend(client, 0, 1)
        return Ticket(client, shared, waits[1])

    async def give_back(self, ticket: Ticket) -> None:
        """Return a reserved job token the request did not use (it cost no LLM call)."""
        if self.job_rate <= 0 or not ticket.granted:
            return
        if not ticket.shared:
            self.local[JOBS].give(ticket.client)
            return
        # Should Redis have gone away since, the client is one token short for a while.
        with contextlib.suppress(ServiceUnavailable, ServerError):
            await self.guard(lambda: self._call(ticket.client, 0, -1))

    def job_refused(self, ticket: Ticket) -> RateLimited:
        _refused(JOBS)
        return RateLimited(
            f"too many new generation jobs: the limit is {self.job_rate} a minute per client "
            f"(answers cached or being generated do not count); retry in {ticket.wait_s:.0f} s",
            retry_after=ticket.wait_s)

    async def _spend(self, client: str, request_cost: int,
                     job_cost: int) -> tuple[tuple[float, float], bool]:
        try:
            return await self.guard(lambda: self._call(client, request_cost, job_cost)), True
        except (ServiceUnavailable, ServerError) as exc:
            log.debug("rate limit decided in process: %s", exc)
            metrics.get().rate_limit_fallback()
            return self._spend_locally(client, request_cost, job_cost), False

    async def _call(self, client: str, request_cost: int,
                    job_cost: int) -> tuple[float, float]:
        bucket_keys = [keys.rate_bucket(client, REQUESTS), keys.rate_bucket(client, JOBS)]
        args = [self.request_rate / 60.0, max(1, self.request_rate), request_cost,
                self.job_rate / 60.0, max(1, self.job_rate), job_cost]
        waits = await self._script(keys=bucket_keys, args=args)
        return float(waits[0]), float(waits[1])

    def _spend_locally(self, client: str, request_cost: int,
                       job_cost: int) -> tuple[float, float]:
        waited = self.local[REQUESTS].take(client) if request_cost else 0.0
        if waited > 0 or not job_cost:
            return waited, 0.0
        return 0.0, self.local[JOBS].take(client)


def _refused(budget: str) -> None:
    metrics.get().rate_limited(budget)
