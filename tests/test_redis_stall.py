"""Short Redis stalls (a real redis-server stopped with SIGSTOP, then continued): open event
streams survive them and resume, their jobs are not cancelled as unwatched, and generate
answers 503 at once instead of waiting on socket timeouts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.gen_support import api_client, settings_for, worker_task
from tests.redis_server import RedisServer
from tests.test_gen_streams import Seen, follow, unlimited_session, wait_for
from typeahead.generation.routes import GENERATION

STALL_S = 6.0  # longer than the stream reader's socket timeout (3 s): its reads fail


@pytest.fixture
def stallable(redis_server: RedisServer) -> Iterator[RedisServer]:
    if not redis_server.can_restart:
        pytest.skip("needs a redis-server this test owns")
    try:
        yield redis_server
    finally:
        redis_server.resume()


async def test_streams_survive_a_stall_and_the_job_is_not_cancelled(
    stallable: RedisServer,
) -> None:
    settings = settings_for(stallable.url, generate_unwatched_grace_s=10.0)
    async with api_client(settings) as client, unlimited_session() as session:
        resp = await client.post("/v1/generate", json={"query": "what is the rhine"})
        assert resp.status == 202, await resp.text()
        url = str(client.make_url((await resp.json())["stream_url"]))
        seen = Seen()
        reader = asyncio.create_task(follow(session, url, seen))
        hub = client.app[GENERATION].hub
        await wait_for(lambda: hub.listeners == 1, 10, "the stream to subscribe")
        stallable.pause()
        await asyncio.sleep(STALL_S)
        stallable.resume()
        assert not reader.done(), seen.events  # still open, on keep-alives
        async with worker_task(settings):  # a worker only now: the job must still be wanted
            await asyncio.wait_for(reader, 30)
    names = [name for _, name, _ in seen.events]
    assert "error" not in names, seen.events
    assert names[-1] == "done" and seen.keepalives >= 2


async def test_a_stall_longer_than_the_grace_ends_the_streams(stallable: RedisServer) -> None:
    settings = settings_for(stallable.url, generate_stream_outage_s=1.0)
    async with api_client(settings) as client, unlimited_session() as session:
        resp = await client.post("/v1/generate", json={"query": "what is oxygen"})
        url = str(client.make_url((await resp.json())["stream_url"]))
        seen = Seen()
        reader = asyncio.create_task(follow(session, url, seen))
        await wait_for(lambda: client.app[GENERATION].hub.listeners == 1, 10, "a stream")
        stallable.pause()
        await asyncio.wait_for(reader, 20)
        stallable.resume()
    assert seen.events[-1][1] == "error" and "unreachable" in seen.events[-1][2]


async def test_generate_answers_503_at_once_while_redis_is_stalled(
    stallable: RedisServer,
) -> None:
    async with api_client(settings_for(stallable.url)) as client:
        assert (await client.post("/v1/generate", json={"query": "before"})).status == 202
        stallable.pause()
        took = []
        for i in range(5):
            started = time.monotonic()
            resp = await client.post("/v1/generate", json={"query": f"during {i}"})
            took.append(time.monotonic() - started)
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "dependency_unavailable"
        stallable.resume()
        # Generous bounds (the suite shares the machine): the old client waited 2 s.
        assert max(took) < 0.5, took
        deadline = time.monotonic() + 5
        while (await client.post("/v1/generate", json={"query": "after"})).status != 202:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
