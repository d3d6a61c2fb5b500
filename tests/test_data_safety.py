"""Data safety: the privacy floor on every path, versioned cache keys, nothing lost by a crash."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.gen_support import api_client, read_sse, settings_for, standin_server, worker_task
from tests.lexical_fixtures import ROWS, build_small_index
from tests.redis_server import RedisServer
from tests.student_fixtures import tiny_student
from tests.vllm_standin import StandIn
from typeahead import keys
from typeahead.generation import prewarm
from typeahead.generation.cache import SemanticCache, encode_result
from typeahead.generation.extractive import HashingEmbedder
from typeahead.generation.prompt import PROMPT_VERSION
from typeahead.generation.queue import Jobs, connect, job_id
from typeahead.http.app import create_app
from typeahead.normalize import normalize
from typeahead.settings import Settings
from typeahead.suggest.index import LoadedIndex
from typeahead.suggest.service import SuggestService

FLOOR = 3
PRIVATE = "private person name"  # count 2 in ROWS: below the floor
# A rare query sharing words with served ones: the lexical and semantic paths both get close.
RARE_ROWS = [
    *ROWS,
    ("cheap flights paris", 50),
    ("london weather forecast", 40),
    ("new york private clinic", 1),
    ("paris weather", 2),
    ("cheap london cat", 1),
]
RARE = {normalize(t) for t, c in RARE_ROWS if c < FLOOR and normalize(t) != "new york times"}


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> LoadedIndex:
    tmp = tmp_path_factory.mktemp("safety")
    tiny_student(tmp / "student")
    return build_small_index(tmp, RARE_ROWS, FLOOR, vectors=True, vector_factory="flat",
                             student_dir=tmp / "student")


def loose(index: LoadedIndex) -> LoadedIndex:
    """The index with every semantic neighbour accepted, however far."""
    assert index.semantic is not None
    return dataclasses.replace(
        index, semantic=dataclasses.replace(index.semantic, min_similarity=-1.0)
    )


def probes() -> list[str]:
    """Every prefix of every rare query, plus the whole queries with a typo."""
    out: set[str] = set()
    for text in RARE:
        out.update(text[:n] for n in range(1, len(text) + 1))
        out.add(text[:-1] + "x")
    return sorted(out)


def test_no_rare_query_is_in_the_index(index: LoadedIndex) -> None:
    table = index.lexical.data.display
    served = {normalize(t) for t in table.many(list(range(len(table))))}
    assert PRIVATE in RARE and not served & RARE
    assert index.manifest["semantic"]["vectors"]["count"] == len(served)  # only served embedded


def test_semantic_neighbours_never_reach_below_the_floor(index: LoadedIndex) -> None:
    layer = loose(index).semantic
    assert layer is not None
    found = 0
    for text in [*RARE, *probes()]:
        hits = layer.neighbours(layer.encode(text), 100)
        assert all(0 <= entry < index.entries for entry, _ in hits)
        shown = index.lexical.data.display.many([entry for entry, _ in hits])
        assert not {normalize(s) for s in shown} & RARE
        found += len(hits)
    assert found > 0  # the tiny student knows some of the words: neighbours were returned


async def test_suggest_over_http_never_shows_a_rare_query(index: LoadedIndex) -> None:
    service = SuggestService(index=loose(index), results_k=0)
    settings = Settings.from_env(environ={}, generation=False, max_k=50)
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings, service)))
    await client.start_server()
    try:
        for probe in probes():
            resp = await client.get("/v1/suggest", params={"q": probe, "k": "50"})
            assert resp.status == 200
            shown = {normalize(s["text"]) for s in (await resp.json())["suggestions"]}
            assert not shown & RARE, (probe, shown & RARE)
    finally:
        await client.close()


def test_prewarm_never_selects_a_query_below_the_floor() -> None:
    rows = [(t, float(c)) for t, c in RARE_ROWS]
    chosen = prewarm.top_queries(rows, 1000, lambda _: True, min_count=FLOOR)
    assert chosen and not {normalize(q) for q, _ in chosen} & RARE


# --- versioned cache keys -------------------------------------------------------------------


def test_job_ids_and_keys_change_with_prompt_and_model() -> None:
    base = job_id("What is oxygen?", PROMPT_VERSION, "vllm:a")
    assert job_id("what  is OXYGEN?", PROMPT_VERSION, "vllm:a") == base  # same normalised query
    assert job_id("What is oxygen?", PROMPT_VERSION + "x", "vllm:a") != base
    assert job_id("What is oxygen?", PROMPT_VERSION, "vllm:b") != base
    assert keys.summary(base).startswith(f"typeahead:gen:{keys.SCHEMA}:")


async def seed_summary(redis_url: str, query: str, model_id: str, prompt: str) -> str:
    job = job_id(query, prompt, model_id)
    redis = connect(redis_url)
    result = encode_result(job, query, "STALE SUMMARY", [], model_id, prompt)
    await redis.set(keys.summary(job), result)
    await redis.aclose()
    return job


@pytest.mark.parametrize("change", ["model", "prompt"])
async def test_a_prompt_or_model_change_never_serves_a_stale_summary(
    redis_server: RedisServer,
    change: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    standin = StandIn()
    async with standin_server(standin) as url:
        old = settings_for(redis_server.url, llm_url=url, llm_model="old-model")
        new = old if change == "prompt" else dataclasses.replace(old, llm_model="new-model")
        await seed_summary(redis_server.url, "what is oxygen", "vllm:old-model", PROMPT_VERSION)
        async with api_client(old) as client:  # unchanged: the cached answer is served
            resp = await client.post("/v1/generate", json={"query": "what is oxygen"})
            assert resp.status == 200 and (await resp.json())["summary"] == "STALE SUMMARY"
        if change == "prompt":
            for module in ("typeahead.generation.routes", "typeahead.generation.worker"):
                monkeypatch.setattr(f"{module}.PROMPT_VERSION", PROMPT_VERSION + "-next")
        async with api_client(new) as client, worker_task(new):
            resp = await client.post("/v1/generate", json={"query": "what is oxygen"})
            assert resp.status == 202, await resp.text()
            events = await read_sse(client, (await resp.json())["stream_url"])
    result = orjson.loads(events[-1][1])
    assert result["summary"] != "STALE SUMMARY" and standin.calls == 1
    assert result["model"] == new.llm_model.join(("vllm:", ""))
    if change == "prompt":
        assert result["prompt_version"] == PROMPT_VERSION + "-next"


async def test_semantic_cache_is_per_model_and_prompt(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    embedder = HashingEmbedder()
    old = SemanticCache(redis, embedder, f"vllm:a:{PROMPT_VERSION}", 0.9)
    new = SemanticCache(redis, embedder, f"vllm:b:{PROMPT_VERSION}", 0.9)
    await old.add("j" * 32, "what is the capital of france")
    assert await old.lookup("what is the capital of france") is not None
    assert await new.lookup("what is the capital of france") is None
    await redis.aclose()


# --- nothing lost by a crash ----------------------------------------------------------------


async def test_a_crash_between_storing_and_acking_loses_no_summary(
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    settings = settings_for(redis_server.url)
    crashed = asyncio.Event()
    real_ack = Jobs.ack

    async def crash_on_first_ack(self: Jobs, entry: str, shard: int = 0) -> None:
        if not crashed.is_set():
            crashed.set()
            raise ConnectionError("worker died before acknowledging")  # entry stays pending
        await real_ack(self, entry, shard)

    monkeypatch.setattr(Jobs, "ack", crash_on_first_ack)
    async with api_client(settings) as client:
        async with worker_task(settings, name="doomed"):
            resp = await client.post("/v1/generate", json={"query": "rhine river"})
            job = (await resp.json())["id"]
            await asyncio.wait_for(crashed.wait(), 10)
        redis = connect(redis_server.url)
        assert await redis.xlen(keys.QUEUE) == 1  # accepted, done, not acknowledged
        async with worker_task(settings, name="rescuer") as rescuer:
            for _ in range(200):
                if await redis.xlen(keys.QUEUE) == 0:
                    break
                await asyncio.sleep(0.05)
            assert rescuer.completed == 0  # it found the job done: no second run
        record = await Jobs(redis).record(job)
        assert record["status"] == "done" and record["completions"] == "1"
        assert await redis.xlen(keys.QUEUE) == 0
        cached = await client.post("/v1/generate", json={"query": "rhine river"})
        assert cached.status == 200 and (await cached.json())["cached"] is True
        await redis.aclose()
