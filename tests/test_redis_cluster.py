"""The generation tier on a real Redis Cluster (three primaries, three replicas on localhost).

A cluster refuses with CROSSSLOT any script or multi-key command whose keys hash to different
slots, and so do the cluster client's own checks: running the whole generation path here
(enqueue, worker, streams through the hub, the summary and semantic caches, inline jobs with
their leases, reclaiming a dead worker's entries, curation rules) is the test that every
multi-key operation stays in one slot. The plain (untagged) layout on the same cluster fails
with CROSSSLOT at the first enqueue, which shows the check is live.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import RedisClusterException, ResponseError

from tests.gen_support import (
    api_client,
    docs_index_dir,
    read_sse,
    settings_for,
    standin_server,
    text_of,
    worker_task,
)
from tests.redis_cluster import RedisCluster, cluster_support
from tests.vllm_standin import DEFAULT_TEXT, StandIn
from typeahead import keys
from typeahead.generation.cache import get_summary
from typeahead.generation.extractive import load_embedder
from typeahead.generation.prompt import PROMPT_VERSION
from typeahead.generation.queue import Jobs, job_id, layout_for, open_redis
from typeahead.generation.routes import GENERATION
from typeahead.generation.worker import Worker, semantic_cache
from typeahead.settings import Settings

pytestmark = pytest.mark.skipif(cluster_support() is not None,
                                reason=f"no Redis Cluster here: {cluster_support()}")

SHARDS = 8
QUERIES = ["rhine river", "capital of france", "oxygen element", "eiffel tower year",
           "swiss alps river", "north sea border", "atomic number 8", "seine city"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    topology = RedisCluster()
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()


@pytest.fixture
async def clean(cluster: RedisCluster) -> AsyncIterator[RedisCluster]:
    """The shared cluster, emptied before the test."""
    redis = open_redis(cluster_settings(cluster.url))
    try:
        await redis.flushall()  # the cluster client sends it to every primary
    finally:
        await redis.aclose()
    yield cluster


def cluster_settings(url: str, **overrides: Any) -> Settings:
    # The breaker's 90 ms budget is tested on one Redis (tests/test_redis_stall.py); six
    # cluster nodes on a loaded 2-core machine may answer a first call more slowly.
    overrides.setdefault("redis_timeout_s", 1.0)
    return settings_for(url, redis_cluster=True, redis_queue_shards=SHARDS, **overrides)


async def wait_until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_every_key_of_a_job_shares_its_shards_slot() -> None:
    layout = keys.Layout.cluster(SHARDS)
    slots = {layout.shard(job_id(q, "p", "m")) for q in QUERIES}
    assert len(slots) > 2  # the queries spread over shards
    for query in QUERIES:
        job = job_id(query, "p", "m")
        shard = layout.shard(job)
        names = [layout.job(job), layout.tokens(job), layout.summary(job),
                 layout.listeners(job), layout.queue(shard), layout.leases(shard),
                 layout.hub_wake("proc", shard)]
        assert len({_slot(name) for name in names}) == 1, names
    # Each shard's tag lies in its own eighth of the slots: shards spread over primaries.
    for shard in range(SHARDS):
        assert _slot(layout.queue(shard)) == layout.slot(shard)
        assert layout.slot(shard) * SHARDS // keys.CLUSTER_SLOTS == shard
    assert _slot(layout.semantic_vectors("m:p")) == _slot(layout.semantic_order("m:p"))
    # The plain layout keeps the names of a single Redis.
    assert keys.PLAIN.job(job) == keys.job(job) and keys.PLAIN.queue(0) == keys.QUEUE


def _slot(key: str) -> int:
    tag = key[key.index("{") + 1:key.index("}")]
    return keys.key_slot(tag)


async def test_the_untagged_layout_fails_on_a_cluster(clean: RedisCluster) -> None:
    """The control: without hash tags, the first enqueue is refused with CROSSSLOT."""
    redis = open_redis(cluster_settings(clean.url))
    try:
        jobs = Jobs(redis, layout=keys.PLAIN)
        with pytest.raises((ResponseError, RedisClusterException), match="hash to the same slot"):
            await jobs.submit(job_id("rhine", "p", "m"), "rhine", deadline_s=10, max_depth=10)
    finally:
        await redis.aclose()


async def test_generation_streams_caches_and_polls_on_a_cluster(clean: RedisCluster) -> None:
    """Jobs in every shard: queued, run by one worker reading all shards, streamed through
    the per-shard hubs, polled, cached; a paraphrase hits the semantic cache."""
    settings = cluster_settings(clean.url, semantic_cache=True, semantic_cache_threshold=0.7)
    redis = open_redis(settings)
    async with api_client(settings) as client:
        model_key = f"{client.app[GENERATION].model_id}:{PROMPT_VERSION}"
        semantic = semantic_cache(settings, redis, load_embedder(),
                                  client.app[GENERATION].model_id)
        async with worker_task(settings, semantic=semantic) as worker:
            await _generate_all(client, worker)
            mirror = client.app[GENERATION].semantic
            # The API refreshes its vector mirror once a second.
            await wait_until(lambda: _found(mirror, "the rhine river is what"))
            hit = await client.post("/v1/generate", json={"query": "the rhine river is what"})
            body = await hit.json()
            assert hit.status == 200 and body["cached"] is True
            assert body["id"] == job_id("rhine river", PROMPT_VERSION,
                                        client.app[GENERATION].model_id)
    try:
        jobs = Jobs(redis, layout=layout_for(settings))
        assert await jobs.depth() == 0  # every entry acknowledged, in every shard
        ids = [job_id(q, PROMPT_VERSION, client.app[GENERATION].model_id) for q in QUERIES]
        assert len({jobs.layout.shard(job) for job in ids}) > 2
        assert await get_summary(redis, ids[3], jobs.layout) is not None
        layout = jobs.layout
        assert await redis.hlen(layout.semantic_vectors(model_key)) == len(QUERIES)
    finally:
        await redis.aclose()


async def _generate_all(client: Any, worker: Worker) -> None:
    posted = [await _post(client, q) for q in QUERIES]
    assert all(p["status"] in ("queued", "running") for p in posted)
    streams = await asyncio.gather(*(read_sse(client, f"/v1/generate/{p['id']}/stream")
                                     for p in posted))
    for events in streams:
        assert events[-1][0] == "done", events[-1]
        assert text_of(events)
    assert worker.completed == len(QUERIES)
    polled = await client.get(f"/v1/generate/{posted[0]['id']}")
    assert polled.status == 200 and (await polled.json())["status"] == "done"
    again = await client.post("/v1/generate", json={"query": QUERIES[1]})
    assert again.status == 200 and (await again.json())["cached"] is True


async def test_inline_jobs_leases_and_listener_cancels_on_a_cluster(
    clean: RedisCluster, tmp_path: Path,
) -> None:
    """An API process runs jobs itself (leases per shard, tokens published then stored),
    and a worker cancels a queued job nobody listens to (one script per shard)."""
    standin = StandIn(token_delay_s=0.01)
    async with standin_server(standin) as url:
        settings = cluster_settings(clean.url, llm_url=url, generate_inline_jobs=8,
                                    index_dir=docs_index_dir(tmp_path))
        async with api_client(settings) as client:
            posted = [await _post(client, q) for q in QUERIES[:4]]
            for p in posted:
                events = await read_sse(client, f"/v1/generate/{p['id']}/stream")
                assert events[-1][0] == "done" and text_of(events) == DEFAULT_TEXT
        redis = open_redis(settings)
        try:
            layout = layout_for(settings)
            for shard in range(SHARDS):
                assert await redis.zcard(layout.leases(shard)) == 0  # every lease released
            jobs = Jobs(redis, layout=layout)
            job = job_id("nobody listens", "p", "m")
            await jobs.submit(job, "nobody listens", deadline_s=10, max_depth=10, listen_s=0.2)
            slow = StandIn(token_delay_s=0.2)
            async with standin_server(slow) as slow_url:
                quick = settings.replace(llm_url=slow_url, generate_unwatched_grace_s=0.2)
                async with worker_task(quick) as worker:
                    await wait_until(lambda: _is(jobs, job, "failed"))
            assert (await jobs.record(job))["error"] == keys.UNWATCHED_ERROR
            assert worker.completed == 0
        finally:
            await redis.aclose()


async def test_a_dead_workers_entries_are_reclaimed_in_every_shard(clean: RedisCluster) -> None:
    settings = cluster_settings(clean.url, job_claim_idle_s=0.3)
    redis = open_redis(settings)
    try:
        jobs = Jobs(redis, layout=layout_for(settings))
        ids = [job_id(q, "p", "m") for q in QUERIES]
        for job, query in zip(ids, QUERIES, strict=True):
            await jobs.submit(job, query, deadline_s=20, max_depth=100)
        taken: list[Any] = []
        for shard in range(SHARDS):  # a worker that reads everything and dies
            await jobs.ensure_group(shard)
            taken += await jobs.read("dead", count=10, block_ms=1, shard=shard)
        assert len(taken) == len(QUERIES) and len({e.shard for e in taken}) > 2
        async with worker_task(settings, name="rescuer") as worker:
            await wait_until(lambda: _all_done(jobs, ids))
        assert worker.completed == len(QUERIES)
        assert await jobs.depth() == 0
    finally:
        await redis.aclose()


async def test_curation_rules_change_in_one_slot_on_a_cluster(clean: RedisCluster) -> None:
    from typeahead.http.curation import CurationStore
    from typeahead.safety.rules import parse_rule

    redis = open_redis(cluster_settings(clean.url))
    try:
        store = CurationStore(redis)
        rule = parse_rule({"type": "block_text", "text": "bad words", "author": "ops"}, "r1",
                          policy=None)
        assert await store.add(rule) == 1
        rules, version = await store.load()
        assert [r.id for r in rules] == ["r1"] and version == 1
        assert await store.delete("r1", "ops") == 2
        assert len(await store.audit(10)) == 2
    finally:
        await redis.aclose()


async def _post(client: Any, query: str) -> dict[str, Any]:
    resp = await client.post("/v1/generate", json={"query": query})
    assert resp.status == 202, await resp.text()
    return dict(await resp.json())


async def _found(semantic: Any, query: str) -> bool:
    return await semantic.lookup(query) is not None


async def _is(jobs: Jobs, job: str, status: str) -> bool:
    return (await jobs.record(job)).get("status") == status


async def _all_done(jobs: Jobs, ids: list[str]) -> bool:
    return all([(await jobs.record(job)).get("status") == "done" for job in ids])


# --- a primary killed under load ---------------------------------------------------------------


async def test_killing_a_primary_under_load_loses_no_accepted_job() -> None:
    """Jobs are posted one after another while two workers run them; a primary is killed
    (SIGKILL) mid-run. Its replica is promoted, and every job the API accepted (202) is done
    in the end: entries pending on the dead primary are reclaimed from the promoted replica."""
    topology = RedisCluster()
    try:
        topology.start()
        timings = await _load_through_a_kill(topology)
    finally:
        topology.stop()
    print(f"\ncluster failover: {timings}")


async def _load_through_a_kill(topology: RedisCluster) -> dict[str, Any]:
    standin = StandIn(token_delay_s=0.02)
    async with standin_server(standin) as url:
        settings = cluster_settings(topology.urls, llm_url=url, job_claim_idle_s=1.0,
                                    job_deadline_s=60.0, queue_max_depth=10_000,
                                    generate_rate_per_min=0, generate_request_rate_per_min=0)
        layout = layout_for(settings)
        victim = topology.primary_of(layout.slot(0))
        replica = topology.replica_of(victim)
        accepted: list[str] = []
        refused: list[int] = []
        redis = open_redis(settings)
        jobs = Jobs(redis, layout=layout)
        try:
            async with api_client(settings) as client, \
                    worker_task(settings, name="w1", concurrency=16), \
                    worker_task(settings, name="w2", concurrency=16):
                load = asyncio.create_task(_post_for(client, 6.0, accepted, refused))
                await asyncio.sleep(2.0)
                killed = time.monotonic()
                victim.kill()
                await wait_until(lambda: _promoted(topology, replica), timeout=30)
                promoted = time.monotonic()
                await load
                await wait_until(lambda: _all_done(jobs, accepted), timeout=60)
                done = time.monotonic()
        finally:
            await redis.aclose()
    in_victim = sum(layout.shard(job) == 0 for job in accepted)
    assert accepted and in_victim > 0
    return {"accepted": len(accepted), "refused_503": len(refused),
            "accepted_in_killed_shard": in_victim,
            "kill_to_promotion_s": round(promoted - killed, 2),
            "promotion_to_all_done_s": round(done - promoted, 2)}


async def _post_for(client: Any, seconds: float, accepted: list[str],
                    refused: list[int]) -> None:
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
        resp = await client.post("/v1/generate", json={"query": f"load question {n}"})
        if resp.status == 202:
            accepted.append((await resp.json())["id"])
        else:
            assert resp.status == 503, await resp.text()  # the only refusal while failing over
            refused.append(resp.status)
        await asyncio.sleep(0.025)


async def _promoted(topology: RedisCluster, replica: Any) -> bool:
    return await asyncio.to_thread(lambda: topology.is_primary(replica) and topology.ready())


async def test_a_failed_shard_opens_the_breaker_for_its_own_calls_only() -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from typeahead.errors import ServiceUnavailable
    from typeahead.generation.queue import RedisGuard

    guard = RedisGuard()

    async def down() -> None:
        raise RedisConnectionError("primary gone")

    async def up() -> str:
        return "ok"

    with pytest.raises(ServiceUnavailable):
        await guard(down, 3)
    with pytest.raises(ServiceUnavailable):
        await guard(up, 3)  # open: refused without a call
    assert await guard(up, 4) == "ok"  # another shard's primary answers
    assert await guard(up) == "ok"  # and so do calls of no shard (rate limits)
