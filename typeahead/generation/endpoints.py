"""Several LLM replicas behind one client: balancing, prefix affinity, ejection, probes.

``TYPEAHEAD_LLM_URL`` may list several OpenAI-compatible servers (comma-separated), each a
replica of the same model. ``EndpointPool`` picks one for every request:

- **Fewest outstanding requests.** Each endpoint counts the requests this process has open on
  it; the least busy one is preferred.
- **Prefix affinity.** Requests that share a prompt prefix (the system prompt and the first
  grounding document, ``VLLMBackend.affinity_key``) rank the endpoints alike by rendezvous
  hashing, so they go to the same replica and find the prefix in its KV cache. A request
  follows that ranking to the first endpoint with at most ``llm_affinity_slack`` more
  outstanding requests than the least busy one: affinity gives way when its replica is much
  busier. Adding or removing a replica moves only the prefixes that ranked it first.
- **Ejection.** ``llm_eject_after`` consecutive failures (requests that failed to connect, timed
  out or answered 5xx, and failed ``/health`` probes) eject an endpoint: it gets no requests
  while others are in. A background probe (``GET <base><llm_health_path>`` every
  ``llm_probe_interval_s``, with several endpoints only) re-admits it on its first success.
  When every endpoint is ejected, all are tried again rather than none (a whole-fleet blip
  must not stop generation).

Every process has its own pool (the counts are this process's requests); the metrics
(``typeahead_llm_endpoint_*``, labelled by endpoint) merge over the processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import time
from collections.abc import Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from typeahead import metrics
from typeahead.settings import Settings

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 1.0


def llm_bases(llm_url: str) -> list[str]:
    """The base URLs in ``TYPEAHEAD_LLM_URL`` (comma-separated), without a trailing ``/v1``,
    each once, in the order given."""
    bases: list[str] = []
    for part in llm_url.split(","):
        base = part.strip().rstrip("/")
        base = base[: -len("/v1")] if base.endswith("/v1") else base
        if base and base not in bases:
            bases.append(base)
    return bases


def endpoint_label(base: str) -> str:
    """The URL without credentials, for metrics and logs."""
    parts = urlsplit(base)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class Endpoint:
    """One replica: its base URL and what this process knows about it."""

    __slots__ = ("base", "ejected", "failures", "label", "outstanding")

    def __init__(self, base: str) -> None:
        self.base = base
        self.label = endpoint_label(base)
        self.outstanding = 0
        self.failures = 0  # consecutive, requests and probes together
        self.ejected = False

    def __repr__(self) -> str:
        state = "ejected" if self.ejected else "in"
        return f"Endpoint({self.label}, {state}, outstanding={self.outstanding})"


class EndpointPool:
    """The endpoints of one LLM backend, with the choice of one per request."""

    def __init__(self, settings: Settings, bases: Iterable[str]) -> None:
        self.endpoints = [Endpoint(base) for base in bases]
        if not self.endpoints:
            raise ValueError("an endpoint pool needs at least one URL")
        self.eject_after = settings.llm_eject_after
        self.slack = settings.llm_affinity_slack
        self.probe_interval_s = settings.llm_probe_interval_s
        self.health_path = settings.llm_health_path
        self._headers = ({"Authorization": f"Bearer {settings.llm_api_key}"}
                         if settings.llm_api_key else {})
        self._probing: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        m = metrics.get()
        for ep in self.endpoints:
            m.llm_endpoint_state(ep.label, ejected=False)

    # --- choosing -----------------------------------------------------------------------------

    def pick(self, key: bytes, tried: Iterable[Endpoint] = ()) -> Endpoint:
        """The endpoint for a request whose prompt prefix is ``key``: an admitted one this
        request has not ``tried`` yet, else an admitted one, else any it has not tried, else
        any; among those as the module's docstring says."""
        tried = set(tried)
        admitted = [e for e in self.endpoints if not e.ejected]
        pool = ([e for e in admitted if e not in tried] or admitted
                or [e for e in self.endpoints if e not in tried] or self.endpoints)
        if len(pool) == 1:
            return pool[0]
        least = min(e.outstanding for e in pool)
        ranked = sorted(pool, key=lambda e: _weight(key, e.base), reverse=True)
        return next(e for e in ranked if e.outstanding <= least + self.slack)

    @contextlib.contextmanager
    def using(self, ep: Endpoint) -> Iterator[Endpoint]:
        """Count a request as outstanding on ``ep`` while it runs."""
        ep.outstanding += 1
        metrics.get().llm_endpoint_request(ep.label)
        try:
            yield ep
        finally:
            ep.outstanding -= 1
            metrics.get().llm_endpoint_done(ep.label)

    # --- health ---------------------------------------------------------------------------------

    def succeeded(self, ep: Endpoint) -> None:
        ep.failures = 0
        if ep.ejected:
            ep.ejected = False
            log.warning("LLM endpoint %s re-admitted", ep.label)
            metrics.get().llm_endpoint_state(ep.label, ejected=False)

    def failed(self, ep: Endpoint, why: str, *, probe: bool = False) -> None:
        ep.failures += 1
        metrics.get().llm_endpoint_error(ep.label, "probe" if probe else "request")
        if not ep.ejected and ep.failures >= self.eject_after:
            ep.ejected = True
            log.warning("LLM endpoint %s ejected after %d consecutive failures (last: %s)",
                        ep.label, ep.failures, why)
            metrics.get().llm_endpoint_state(ep.label, ejected=True)

    def start_probing(self) -> None:
        """Probe every endpoint in the background (with several; idempotent). Needs a loop."""
        if len(self.endpoints) > 1 and (self._probing is None or self._probing.done()):
            # A fresh context: the probe outlives the request that started it, whose id would
            # otherwise mark every probe's log line.
            self._probing = asyncio.get_running_loop().create_task(
                self._probe_forever(), context=contextvars.Context())

    async def close(self) -> None:
        if self._probing is not None:
            self._probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probing
            self._probing = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def probe_all(self) -> None:
        """One round of ``/health`` probes, all endpoints at once."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=min(PROBE_TIMEOUT_S, self.probe_interval_s)))
        await asyncio.gather(*(self._probe(ep) for ep in self.endpoints))

    async def _probe_forever(self) -> None:
        while True:
            started = time.monotonic()
            await self.probe_all()
            await asyncio.sleep(max(0.0, self.probe_interval_s - (time.monotonic() - started)))

    async def _probe(self, ep: Endpoint) -> None:
        assert self._session is not None
        try:
            async with self._session.get(ep.base + self.health_path,
                                         headers=self._headers) as resp:
                if resp.status < 400:
                    self.succeeded(ep)
                    return
                why = f"/health answered {resp.status}"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            why = f"/health: {exc or type(exc).__name__}"
        self.failed(ep, why, probe=True)


def _weight(key: bytes, base: str) -> int:
    """Rendezvous (highest random weight) hashing: the endpoint's rank for one prefix."""
    digest = hashlib.blake2b(base.encode() + b"\0" + key, digest_size=8).digest()
    return int.from_bytes(digest, "big")
