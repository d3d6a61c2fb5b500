"""The generate budgets: shared by API processes through a real Redis, new jobs counted apart
from cached answers, and each process's own buckets while Redis is down."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.lexical_fixtures import build_small_index
from tests.redis_server import RedisServer
from tests.serve_process import serving
from typeahead import keys
from typeahead.generation.cache import encode_result
from typeahead.generation.prompt import PROMPT_VERSION
from typeahead.generation.queue import RedisGuard, connect, job_id
from typeahead.generation.routes import GENERATION
from typeahead.http.app import create_app
from typeahead.http.ratelimit import ClientLimits, TokenBucket
from typeahead.settings import Settings
from typeahead.suggest.service import SuggestService

Client = TestClient[Any, Any]
RESULT = {"summary": "A cached answer.", "sources": []}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> SuggestService:
    return SuggestService(index=build_small_index(tmp_path_factory.mktemp("rl")), results_k=0)


@contextlib.asynccontextmanager
async def api(service: SuggestService, redis_url: str, **overrides: Any) -> AsyncIterator[Client]:
    """One API process: its own app, buckets, memory cache and Redis clients."""
    # (A Redis stopped by a test is refused at once; a slow answer on a busy test machine
    # must not trip the breaker.)
    settings = Settings.from_env(environ={}, redis_url=redis_url, generate_inline_jobs=0,
                                 redis_timeout_s=2.0, **overrides)
    client: Client = TestClient(TestServer(create_app(settings, service)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def post(client: Client, query: str, key: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"X-API-Key": key} if key else {}
    resp = await client.post("/v1/generate", json={"query": query}, headers=headers)
    return resp.status, await resp.json()


def remember(client: Client, query: str) -> None:
    """Put an answer for ``query`` in this process's memory cache (as if served lately)."""
    gen = client.server.app[GENERATION]
    gen.memory.put(job_id(query, PROMPT_VERSION, gen.model_id), dict(RESULT))


# --- the job budget is one budget, whichever process is asked ----------------------------------


async def test_two_api_processes_share_one_job_budget(
    service: SuggestService, redis_server: RedisServer,
) -> None:
    async with api(service, redis_server.url, generate_rate_per_min=4) as a, \
            api(service, redis_server.url, generate_rate_per_min=4) as b:
        statuses = [(await post((a, b)[i % 2], f"question {i}"))[0] for i in range(8)]
        assert statuses[:4] == [202] * 4
        assert statuses[4:] == [429] * 4
        status, body = await post(b, "question 9")
        assert status == 429 and body["error"]["code"] == "rate_limited"
        assert "new generation jobs" in body["error"]["message"]


async def test_a_concurrent_burst_over_two_processes_spends_no_more_than_the_budget(
    service: SuggestService, redis_server: RedisServer,
) -> None:
    async with api(service, redis_server.url, generate_rate_per_min=5,
                   api_keys=("k-burst",)) as a, \
            api(service, redis_server.url, generate_rate_per_min=5,
                api_keys=("k-burst",)) as b:
        answers = await asyncio.gather(*(post((a, b)[i % 2], f"burst {i}", key="k-burst")
                                         for i in range(20)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [202] * 5 + [429] * 15


@pytest.fixture
def two_processes(tmp_path: Path, redis_server: RedisServer) -> Iterator[str]:
    """``typeahead serve --workers 2`` on the test Redis, both processes answering."""
    index = build_small_index(tmp_path)
    with serving(index.path, REDIS_URL=redis_server.url, TYPEAHEAD_GENERATE_RATE_PER_MIN="4",
                 TYPEAHEAD_SEMANTIC="false", TYPEAHEAD_REDIS_TIMEOUT_S="2") as (base, _):
        yield base


async def test_a_client_spreading_over_two_api_processes_gets_one_budget(
    two_processes: str,
) -> None:
    # A new connection per request: the kernel spreads them over both processes (the fixture
    # saw both answer), which used to give each process's budget anew.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        statuses = []
        for i in range(12):
            async with session.post(two_processes + "/v1/generate",
                                    json={"query": f"spread question {i}"}) as resp:
                statuses.append(resp.status)
    assert sorted(statuses) == [202] * 4 + [429] * 8


# --- cached and joined answers cost no job token -----------------------------------------------


async def test_cached_answers_draw_on_the_request_budget_only(
    service: SuggestService, redis_server: RedisServer,
) -> None:
    async with api(service, redis_server.url, generate_rate_per_min=1,
                   generate_request_rate_per_min=6) as client:
        assert (await post(client, "a new question"))[0] == 202  # the one job token
        assert (await post(client, "another new question"))[0] == 429
        remember(client, "asked before")
        statuses = [(await post(client, "asked before"))[0] for _ in range(4)]
        assert statuses == [200] * 4  # six requests so far: the request budget is spent
        status, body = await post(client, "asked before")
        assert status == 429 and "cached answers included" in body["error"]["message"]


async def test_an_answer_cached_in_redis_needs_no_job_token(
    service: SuggestService, redis_server: RedisServer,
) -> None:
    async with api(service, redis_server.url, generate_rate_per_min=1) as client:
        gen = client.server.app[GENERATION]
        job = job_id("in the cache", PROMPT_VERSION, gen.model_id)
        await gen.redis.set(keys.summary(job), encode_result(
            job, "in the cache", "Cached.", [], gen.model_id, PROMPT_VERSION))
        assert (await post(client, "uncached"))[0] == 202
        for _ in range(3):  # with the job budget spent
            status, body = await post(client, "in the cache")
            assert status == 200 and body["summary"] == "Cached." and body["cached"]


async def test_a_client_out_of_job_budget_still_joins_a_running_job(
    service: SuggestService, redis_server: RedisServer,
) -> None:
    async with api(service, redis_server.url, generate_rate_per_min=1,
                   api_keys=("alice", "bob")) as client:
        status, started = await post(client, "a popular question", key="alice")
        assert status == 202
        assert (await post(client, "bob's own question", key="bob"))[0] == 202
        status, joined = await post(client, "a popular question", key="bob")
        assert status == 202 and joined["id"] == started["id"]
        assert (await post(client, "bob's second question", key="bob"))[0] == 429
        # Joining gave the token back: the job budget of a client who only joins is whole.
        async with api(service, redis_server.url, generate_rate_per_min=1,
                       api_keys=("carol",)) as other:
            for _ in range(3):
                assert (await post(other, "a popular question", key="carol"))[0] == 202
            assert (await post(other, "carol's question", key="carol"))[0] == 202


# --- Redis down: each process decides alone ----------------------------------------------------


async def test_while_redis_is_down_each_process_has_its_own_budget(
    service: SuggestService, redis_server: RedisServer,
) -> None:
    if not redis_server.can_restart:
        pytest.skip("needs a redis-server this test can stop")
    async with api(service, redis_server.url, generate_request_rate_per_min=3) as a, \
            api(service, redis_server.url, generate_request_rate_per_min=3) as b:
        for client in (a, b):
            remember(client, "asked before")
        redis_server.stop()
        try:
            status, body = await post(a, "not cached")  # a request: one of a's three
            assert status == 503 and body["error"]["code"] == "dependency_unavailable"
            # Memory-cached answers are served without Redis, each process from its own budget.
            assert [(await post(a, "asked before"))[0] for _ in range(3)] == [200, 200, 429]
            assert [(await post(b, "asked before"))[0] for _ in range(4)] == [200] * 3 + [429]
        finally:
            redis_server.start()
        await asyncio.sleep(0.6)  # the circuit breaker closes again
        # Back on Redis: the shared bucket is fresh, and both processes spend from it.
        statuses = [(await post((a, b)[i % 2], "asked before"))[0] for i in range(4)]
        assert statuses == [200, 200, 200, 429]


# --- the buckets themselves ----------------------------------------------------------------------


async def test_the_shared_bucket_refills_gives_back_and_expires(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    try:
        settings = Settings.from_env(environ={}, generate_rate_per_min=120)
        limits = ClientLimits(settings, redis, RedisGuard())
        tickets = [await limits.reserve("addr:10.0.0.1") for _ in range(121)]
        assert all(t.granted and t.shared for t in tickets[:120])
        assert not tickets[120].granted and 0.3 < tickets[120].wait_s <= 0.5
        await limits.give_back(tickets[0])
        assert (await limits.reserve("addr:10.0.0.1")).granted
        assert not (await limits.reserve("addr:10.0.0.1")).granted
        assert (await limits.reserve("addr:10.0.0.2")).granted  # another client
        await asyncio.sleep(0.6)  # two a second
        assert (await limits.reserve("addr:10.0.0.1")).granted
        key = keys.rate_bucket("addr:10.0.0.1", "jobs")
        assert "{rl:addr:10.0.0.1}" in key
        assert 0 < await redis.pttl(key) <= 61_000
    finally:
        await redis.aclose()


def test_the_process_bucket_gives_a_token_back() -> None:
    bucket = TokenBucket(2)
    assert bucket.take("a", now=0.0) == 0.0 and bucket.take("a", now=0.0) == 0.0
    assert bucket.take("a", now=0.0) > 0
    bucket.give("a", now=0.0)
    assert bucket.take("a", now=0.0) == 0.0
    bucket.give("b", now=0.0)  # never above the burst
    assert [bucket.take("b", now=0.0) == 0.0 for _ in range(3)] == [True, True, False]


def test_rates_are_validated() -> None:
    from typeahead.errors import ConfigError

    with pytest.raises(ConfigError, match="generate_request_rate_per_min"):
        Settings.from_env(environ={"TYPEAHEAD_GENERATE_REQUEST_RATE_PER_MIN": "-1"})
