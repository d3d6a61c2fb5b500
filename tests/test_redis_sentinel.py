"""A Sentinel-managed primary: real ``redis-server --sentinel`` processes (three, quorum two)
watch a primary and its replica. The primary is killed; once the Sentinels have promoted the
replica, generation resumes through the same API and worker, with no restart, well within
10 s of the promotion."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.gen_support import api_client, read_sse, settings_for, worker_task
from tests.redis_cluster import SERVICE, SentinelSet, cluster_support
from typeahead.errors import ConfigError
from typeahead.settings import Settings

pytestmark = pytest.mark.skipif(cluster_support() is not None,
                                reason=f"no Redis Sentinel here: {cluster_support()}")

RESUME_TARGET_S = 10.0


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    topology = SentinelSet()
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()


def test_cluster_and_sentinel_settings_are_checked() -> None:
    env = {"REDIS_SENTINELS": "10.0.0.1:26379, 10.0.0.2:26379",
           "TYPEAHEAD_REDIS_SENTINEL_SERVICE": "cache"}
    settings = Settings.from_env(environ=env)
    assert settings.redis_sentinels == ("10.0.0.1:26379", "10.0.0.2:26379")
    assert settings.redis_sentinel_service == "cache" and settings.uses_redis
    with pytest.raises(ConfigError, match="not host:port"):
        Settings.from_env(environ={"REDIS_SENTINELS": "10.0.0.1"})
    with pytest.raises(ConfigError, match="is redis://host:port"):
        Settings.from_env(environ={"REDIS_URL": "redis://a:1,b:2",
                                   "TYPEAHEAD_REDIS_CLUSTER": "true"})
    with pytest.raises(ConfigError, match="exclude each other"):
        Settings.from_env(environ={**env, "REDIS_URL": "redis://x:1",
                                   "TYPEAHEAD_REDIS_CLUSTER": "true"})


async def test_generation_resumes_on_the_promoted_replica(sentinels: SentinelSet) -> None:
    settings = settings_for(None, redis_sentinels=sentinels.addresses,
                            redis_sentinel_service=SERVICE, job_claim_idle_s=1.0)
    async with api_client(settings) as client, worker_task(settings):
        assert await _generate(client, "rhine river") == "done"
        old = sentinels.primary_port()
        assert sentinels.primary is not None
        killed = time.monotonic()
        sentinels.primary.kill()
        while sentinels.primary_port() == old:
            assert time.monotonic() - killed < 30, "no promotion within 30 s"
            await asyncio.sleep(0.05)
        promoted = time.monotonic()
        attempts = await _until_generated(client, promoted)
        resumed = time.monotonic()
    print(f"\nsentinel failover: kill->promotion {promoted - killed:.2f} s, "
          f"promotion->first generated summary {resumed - promoted:.2f} s "
          f"({attempts} attempts)")
    assert resumed - promoted < RESUME_TARGET_S


async def _until_generated(client: Any, since: float) -> int:
    """Post new questions until one is generated to the end; how many it took."""
    attempts = 0
    while time.monotonic() - since < RESUME_TARGET_S:
        attempts += 1
        with contextlib.suppress(AssertionError):
            if await _generate(client, f"oxygen element {attempts}") == "done":
                return attempts
        await asyncio.sleep(0.1)
    raise AssertionError(f"no summary within {RESUME_TARGET_S} s of the promotion")


async def _generate(client: Any, query: str) -> str:
    resp = await client.post("/v1/generate", json={"query": query})
    assert resp.status == 202, await resp.text()
    job = (await resp.json())["id"]
    events = await asyncio.wait_for(read_sse(client, f"/v1/generate/{job}/stream"), 15)
    return events[-1][0]
