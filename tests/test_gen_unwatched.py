"""Cancelling jobs nobody listens to: the worker closes the upstream request once a job's
listeners key has lapsed; streamed, polled and pre-warm jobs run to the end; a new request
after a cancellation starts afresh; the setting switches it off."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.gen_support import (
    DOCS,
    api_client,
    read_sse,
    settings_for,
    standin_server,
    text_of,
    worker_task,
)
from tests.redis_server import RedisServer
from tests.vllm_standin import DEFAULT_TEXT, DEFAULT_TOKENS, StandIn
from typeahead import keys
from typeahead.generation import prewarm
from typeahead.generation import routes as generate_routes
from typeahead.generation.cache import get_summary
from typeahead.generation.queue import Jobs, connect
from typeahead.settings import Settings
from typeahead.sse import read_events

FULL = DEFAULT_TEXT
GRACE_S = 0.3
SLOW = ["w "] * 40  # 4 s at 0.1 s a token: still streaming when a cancellation comes


@pytest.fixture(autouse=True)
def short_hub_period(monkeypatch: pytest.MonkeyPatch) -> None:
    # The hub refreshes its jobs' listeners keys once a period: shorten it, so that a closed
    # stream lapses in well under a second (grace + 2 periods).
    monkeypatch.setattr(generate_routes, "STREAM_BLOCK_MS", 200)


@pytest.fixture
async def jobs(redis_server: RedisServer) -> AsyncIterator[Jobs]:
    redis = connect(redis_server.url)
    yield Jobs(redis)
    await redis.aclose()


def slow_standin() -> StandIn:
    return StandIn(tokens=list(SLOW), token_delay_s=0.1)


def settings(url: str, llm_url: str, **overrides: Any) -> Settings:
    overrides.setdefault("generate_unwatched_grace_s", GRACE_S)
    return settings_for(url, llm_url=llm_url, **overrides)


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def wait_status(jobs: Jobs, job: str, timeout: float = 10.0) -> dict[str, str]:
    """The job's record once it is done or failed (read from Redis: a GET poll would count
    as listening)."""
    deadline = time.monotonic() + timeout
    while (record := await jobs.record(job)).get("status") not in ("done", "failed"):
        assert time.monotonic() < deadline, record
        await asyncio.sleep(0.05)
    return record


async def post(client: Any, query: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/v1/generate", json={"query": query})
    return resp.status, await resp.json()


async def test_a_job_nobody_streams_is_cancelled_then_a_new_request_starts_afresh(
    redis_server: RedisServer, jobs: Jobs,
) -> None:
    standin = slow_standin()
    async with standin_server(standin) as url:
        cfg = settings(redis_server.url, url)
        async with api_client(cfg) as client, worker_task(cfg) as worker:
            status, body = await post(client, "where does the rhine flow")
            assert status == 202
            started = time.monotonic()
            await wait_for(lambda: standin.disconnects == 1, 3, "the upstream to be closed")
            assert time.monotonic() - started < 2.5  # long before the 4 s answer would end
            polled = await (await client.get(f"/v1/generate/{body['id']}")).json()
            assert polled["status"] == "failed"
            assert polled["error"] == "cancelled: nobody was listening"
            assert await get_summary(client.app[generate_routes.GENERATION].redis,
                                     body["id"]) is None
            await wait_for(lambda: worker.cancelled_unwatched == 1, 2, "the worker to ack it")
            assert await jobs.depth() == 0

            standin.tokens, standin.token_delay_s = list(DEFAULT_TOKENS), 0.0
            status, again = await post(client, "where does the rhine flow")
            assert status == 202 and again["id"] == body["id"] and again["status"] == "queued"
            events = await read_sse(client, again["stream_url"])
            assert events[-1][0] == "done" and text_of(events) == FULL
            assert [e for e, _ in events].count("error") == 0  # nothing of the old attempt
            status, cached = await post(client, "where does the rhine flow")
            assert status == 200 and cached["summary"] == FULL
    assert standin.calls == 2


async def test_a_client_that_closes_its_stream_gets_the_job_cancelled(
    redis_server: RedisServer, jobs: Jobs,
) -> None:
    standin = slow_standin()
    async with standin_server(standin) as url:
        cfg = settings(redis_server.url, url)
        async with api_client(cfg) as client, worker_task(cfg):
            _, body = await post(client, "what is oxygen")
            async with client.get(body["stream_url"]) as resp:
                async for event in read_events(resp.content):
                    if event.event == "token":
                        break  # generation is under way: hang up
            await wait_for(lambda: standin.disconnects == 1, 3, "the upstream to be closed")
            record = await wait_status(jobs, body["id"])
    assert record["status"] == "failed" and record["error"] == keys.UNWATCHED_ERROR


async def test_streamed_and_polled_jobs_are_not_cancelled(
    redis_server: RedisServer, jobs: Jobs,
) -> None:
    # A longer grace here: a poll every 0.1 s must not lapse when this shared machine stalls.
    standin = StandIn(tokens=["w "] * 12, token_delay_s=0.2)  # 2.4 s: four grace periods
    async with standin_server(standin) as url:
        cfg = settings(redis_server.url, url, generate_unwatched_grace_s=0.6)
        async with api_client(cfg) as client, worker_task(cfg):
            _, streamed = await post(client, "what is the capital of france")
            _, polled = await post(client, "what is oxygen")

            async def poll() -> dict[str, Any]:
                while True:
                    got = await (await client.get(f"/v1/generate/{polled['id']}")).json()
                    if got["status"] in ("done", "failed"):
                        return dict(got)
                    await asyncio.sleep(0.1)

            events, final = await asyncio.wait_for(
                asyncio.gather(read_sse(client, streamed["stream_url"]), poll()), 10)
    assert events[-1][0] == "done" and text_of(events) == "w " * 12
    assert final["status"] == "done", final
    assert standin.disconnects == 0 and standin.calls == 2


async def test_prewarm_jobs_are_never_cancelled(
    redis_server: RedisServer, jobs: Jobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = tmp_path / "log.tsv"
    log.write_text("query\tcount\nwhat is the capital of france\t5\n")
    docs = tmp_path / "docs.jsonl"
    docs.write_bytes(b"\n".join(orjson.dumps({"id": d.id, "title": d.title, "text": d.text})
                                for d in DOCS))
    standin = StandIn(tokens=["w "] * 12, token_delay_s=0.1)  # four grace periods, unwatched
    async with standin_server(standin) as url:
        # A user asked first and left: the queued job needs a listener and has none. Pre-warm
        # joins it and pins it; its own worker then runs it to the end.
        async with api_client(settings(redis_server.url, url)) as client:
            _, body = await post(client, "what is the capital of france")
        await asyncio.sleep(2 * GRACE_S)
        assert not await jobs.redis.exists(keys.listeners(body["id"]))
        monkeypatch.setenv("REDIS_URL", redis_server.url)
        monkeypatch.setenv("TYPEAHEAD_LLM_URL", url)
        monkeypatch.setenv("TYPEAHEAD_GENERATE_UNWATCHED_GRACE_S", str(GRACE_S))
        args = argparse.Namespace(log=log, top=1, text_col="query", weight_col="count",
                                  index=None, docs=docs, timeout=30.0, min_count=3.0)
        assert await prewarm.run(args) == 0
    assert (await jobs.record(body["id"]))["status"] == "done"
    assert standin.calls == 1 and standin.disconnects == 0


async def test_the_setting_off_disables_cancellation(
    redis_server: RedisServer, jobs: Jobs,
) -> None:
    standin = StandIn(tokens=["w "] * 12, token_delay_s=0.1)
    async with standin_server(standin) as url:
        cfg = settings(redis_server.url, url, generate_cancel_unwatched=False)
        async with api_client(cfg) as client, worker_task(cfg):
            _, body = await post(client, "what is oxygen")
            record = await wait_status(jobs, body["id"])
            assert not await jobs.redis.exists(keys.listeners(body["id"]))
    assert record["status"] == "done" and standin.disconnects == 0


async def test_the_queue_scripts_mark_pin_and_cancel(jobs: Jobs) -> None:
    # A watched job whose key lapsed before any worker took it fails without an LLM call.
    assert (await jobs.submit("a" * 32, "q", deadline_s=30, max_depth=10,
                              listen_s=0.05)).outcome == "new"
    await asyncio.sleep(0.1)
    assert await jobs.start("a" * 32, "w", cancel_unwatched=True) == -1
    assert (await jobs.record("a" * 32))["error"] == keys.UNWATCHED_ERROR
    # ... and never blocks a new request: it starts afresh.
    assert (await jobs.submit("a" * 32, "q", deadline_s=30, max_depth=10,
                              listen_s=5)).outcome == "new"

    # Pre-warm pins a job, also one a user created; a user joining a pinned job keeps it pinned.
    job = "b" * 32
    await jobs.submit(job, "q", deadline_s=30, max_depth=10, listen_s=0.05)
    await jobs.submit(job, "q", deadline_s=30, max_depth=10, pin=True)
    await jobs.submit(job, "q", deadline_s=30, max_depth=10, listen_s=0.05)
    attempt = await jobs.start(job, "w", cancel_unwatched=True)
    assert attempt == 1
    await asyncio.sleep(0.1)
    assert await jobs.cancel_unwatched([(job, attempt)]) == [False]

    # Only the running attempt, with its key gone, is cancelled, in one call for many jobs.
    live, lapsed = "c" * 32, "d" * 32
    for j in (live, lapsed):
        await jobs.submit(j, "q", deadline_s=30, max_depth=10, listen_s=0.2)
        assert await jobs.start(j, "w", cancel_unwatched=True) == 1
    await asyncio.sleep(0.25)
    await jobs.listen(live, 5)
    assert await jobs.cancel_unwatched([(live, 1), (lapsed, 2), (lapsed, 1)]) == [
        False, False, True]
    events = await jobs.events_since(lapsed, "0-0")
    assert (events[-1].type, events[-1].data) == ("error", keys.UNWATCHED_ERROR)


async def test_the_hub_refreshes_only_what_it_watches(
    redis_server: RedisServer, jobs: Jobs,
) -> None:
    from typeahead.generation.hub import StreamHub

    job = "e" * 32
    await jobs.submit(job, "q", deadline_s=30, max_depth=10, listen_s=0.05)
    reader = connect(redis_server.url, read_timeout_s=3.0)
    hub = StreamHub(Jobs(reader), jobs, period_s=0.1, listen_s=0.5)
    hub.start()
    try:
        listener = await hub.subscribe(job, "0-0")
        await asyncio.sleep(0.3)
        # The POST's 50 ms lapsed long ago; the hub's marks last 0.5 s + 2 periods.
        assert 100 < await jobs.redis.pttl(keys.listeners(job)) <= 700
        hub.unsubscribe(listener)
        await asyncio.sleep(0.8)
        assert not await jobs.redis.exists(keys.listeners(job))
    finally:
        await hub.close()
        await reader.aclose()


async def test_a_job_failed_by_the_check_before_the_worker_noticed_is_acked_not_left(
    redis_server: RedisServer, jobs: Jobs,
) -> None:
    # The check fails the job while its worker is between two tokens (here: from outside, so
    # the worker only learns of it when its next token is refused): the worker must stop,
    # close the upstream and acknowledge the entry, not leave it for a reclaimer.
    standin = slow_standin()
    async with standin_server(standin) as url:
        api_cfg = settings(redis_server.url, url)
        worker_cfg = settings(redis_server.url, url, generate_cancel_unwatched=False)
        async with api_client(api_cfg) as client, worker_task(worker_cfg) as worker:
            _, body = await post(client, "what is oxygen")
            await wait_for(lambda: standin.active == 1, 3, "generation to start")
            await asyncio.sleep(2 * GRACE_S)
            assert await jobs.cancel_unwatched([(body["id"], 1)]) == [True]
            await wait_for(lambda: worker.cancelled_unwatched == 1, 3, "the worker to stop")
            await wait_for(lambda: standin.disconnects == 1, 3, "the upstream to be closed")
            assert await jobs.depth() == 0 and worker.completed == 0
