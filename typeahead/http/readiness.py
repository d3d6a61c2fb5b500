"""``GET /readyz``: is this process fit to take traffic right now?

Ready means: the index is loaded, the generation store (Redis) answers PING when generation
is on, and the LLM server (any one, when ``TYPEAHEAD_LLM_URL`` lists several replicas) lists
its models when ``TYPEAHEAD_LLM_URL`` is set. Each probe has a
short timeout so a dead dependency makes readiness fail fast instead of hanging the probe.
The LLM answer is remembered for a moment, because every load balancer probing every replica
would otherwise multiply into a steady stream of requests to the model server.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from aiohttp import web

from typeahead.generation.endpoints import llm_bases
from typeahead.settings import Settings

PROBE_TIMEOUT_S = 1.0
LLM_CACHE_S = 2.0


class Readiness:
    """Dependency probes, with the HTTP client the LLM probe needs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._llm: tuple[float, str | None] = (0.0, None)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def redis(self, client: Any) -> str | None:
        """None when Redis answers PING in time, else the reason."""
        try:
            await asyncio.wait_for(client.ping(), PROBE_TIMEOUT_S)
        except Exception as exc:  # any failure means "not reachable" here
            return f"redis unreachable: {exc or type(exc).__name__}"
        return None

    async def llm(self) -> str | None:
        """None when the LLM server lists its models, else the reason (cached briefly)."""
        checked, reason = self._llm
        if time.monotonic() - checked < LLM_CACHE_S:
            return reason
        reason = await self._probe_llm()
        self._llm = (time.monotonic(), reason)
        return reason

    async def _probe_llm(self) -> str | None:
        """None when one of the endpoints answers, else every endpoint's reason."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S))
        urls = [models_url(base) for base in llm_bases(self.settings.llm_url or "")]
        reasons = await asyncio.gather(*(self._probe_models(url) for url in urls))
        if any(reason is None for reason in reasons):
            return None
        return "; ".join(r for r in reasons if r)

    async def _probe_models(self, url: str) -> str | None:
        assert self._session is not None
        headers = {}
        if self.settings.llm_api_key:
            headers["Authorization"] = f"Bearer {self.settings.llm_api_key}"
        try:
            async with self._session.get(url, headers=headers) as resp:
                if resp.status >= 400:
                    return f"LLM server answered {resp.status} at {url}"
        except (TimeoutError, aiohttp.ClientError) as exc:
            return f"LLM server unreachable at {url}: {exc or type(exc).__name__}"
        return None


def models_url(base: str) -> str:
    base = base.rstrip("/")
    base = base[: -len("/v1")] if base.endswith("/v1") else base
    return base + "/v1/models"


READINESS = web.AppKey("readiness", Readiness)
