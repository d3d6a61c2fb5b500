"""The job queue's guarantees: reclaim after a worker dies, exactly-once completion, the
semantic cache, and the worker command line."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

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
from tests.vllm_standin import DEFAULT_TEXT, StandIn
from typeahead import keys
from typeahead.generation.queue import Jobs, connect, job_id

FULL = DEFAULT_TEXT
ROOT = Path(__file__).resolve().parent.parent


def spawn_worker(redis_url: str, llm_url: str, docs: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, REDIS_URL=redis_url, TYPEAHEAD_LLM_URL=llm_url,
               TYPEAHEAD_JOB_CLAIM_IDLE_S="0.5", TYPEAHEAD_LOG_LEVEL="WARNING")
    return subprocess.Popen(
        [sys.executable, "-m", "typeahead", "worker", "--docs", str(docs), "--name", "doomed"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


async def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "timed out waiting"
        await asyncio.sleep(0.02)


async def test_a_worker_killed_mid_job_is_replaced_and_the_job_finishes_once(
    redis_server: RedisServer, tmp_path: Path,
) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_bytes(b"\n".join(orjson.dumps({"id": d.id, "title": d.title, "text": d.text})
                                for d in DOCS))
    standin = StandIn(token_delay_s=0.15)
    async with standin_server(standin) as url:
        settings = settings_for(redis_server.url, llm_url=url)
        proc = spawn_worker(redis_server.url, url, docs)
        try:
            async with api_client(settings) as client:
                resp = await client.post("/v1/generate", json={"query": "rhine"})
                body = await resp.json()
                seen: list[str] = []
                reader = asyncio.create_task(read_sse(client, body["stream_url"],
                                                      on_event=lambda e, d: seen.append(e)))
                await wait_for(lambda: seen.count("token") >= 2)
                proc.send_signal(signal.SIGKILL)  # no cleanup, no ack: a crash
                proc.wait(10)
                async with worker_task(settings, name="rescuer") as rescuer:
                    events = await asyncio.wait_for(reader, 20)
                    # "done" can reach the stream before the worker counts its completion.
                    await wait_for(lambda: rescuer.completed >= 1)
                    await asyncio.sleep(0.2)  # time for a (wrong) second completion to show
                    assert rescuer.completed == 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert [e for e, _ in events].count("reset") == 1
    assert text_of(events) == FULL and events[-1][0] == "done"
    assert orjson.loads(events[-1][1])["summary"] == FULL
    redis = connect(redis_server.url)
    record = await Jobs(redis).record(body["id"])
    assert record["status"] == "done" and record["completions"] == "1"
    assert record["attempt"] == "2" and record["worker"] == "rescuer"
    assert await redis.xlen(keys.QUEUE) == 0  # acknowledged and removed
    await redis.aclose()
    assert standin.calls == 2


async def test_a_superseded_worker_can_neither_stream_nor_complete(
    redis_server: RedisServer,
) -> None:
    redis = connect(redis_server.url)
    jobs = Jobs(redis)
    job = job_id("q", "p", "m")
    assert (await jobs.submit(job, "q", deadline_s=30, max_depth=10)).outcome == "new"
    assert await jobs.start(job, "slow") == 1
    assert await jobs.token(job, 1, "a")
    assert await jobs.start(job, "rescuer") == 2  # the reclaim
    assert not await jobs.token(job, 1, "late")
    assert not await jobs.complete(job, 1, b'{"summary": "zombie"}', cache_ttl_s=60)
    assert await jobs.complete(job, 2, b'{"summary": "ok"}', cache_ttl_s=60)
    assert not await jobs.complete(job, 2, b'{"summary": "twice"}', cache_ttl_s=60)
    assert not await jobs.fail(job, 2, "too late")
    record = await jobs.record(job)
    assert record["completions"] == "1" and orjson.loads(record["result"])["summary"] == "ok"
    again = await jobs.submit(job, "q", deadline_s=30, max_depth=10)
    assert again.outcome == "done" and again.result == {"summary": "ok"}
    await redis.aclose()


async def test_jobs_past_their_deadline_fail_without_calling_the_llm(
    redis_server: RedisServer,
) -> None:
    standin = StandIn()
    async with standin_server(standin) as url:
        settings = settings_for(redis_server.url, llm_url=url, job_deadline_s=0.2)
        async with api_client(settings) as client:
            body = await (await client.post("/v1/generate", json={"query": "x"})).json()
            await asyncio.sleep(0.4)  # queued with no worker until the deadline passed
            async with worker_task(settings):
                events = await read_sse(client, body["stream_url"])
    assert events[-1][0] == "error" and "deadline" in events[-1][1]
    assert standin.calls == 0


async def test_semantic_cache_serves_a_paraphrase(redis_server: RedisServer) -> None:
    from typeahead.generation.extractive import load_embedder
    from typeahead.generation.routes import GENERATION
    from typeahead.generation.worker import semantic_cache

    settings = settings_for(redis_server.url, semantic_cache=True, semantic_cache_threshold=0.7)
    redis = connect(redis_server.url)
    async with api_client(settings) as client:
        model_id = client.app[GENERATION].model_id
        semantic = semantic_cache(settings, redis, load_embedder(), model_id)
        async with worker_task(settings, semantic=semantic):
            body = await (await client.post(
                "/v1/generate", json={"query": "what is the capital city of france"})).json()
            await read_sse(client, body["stream_url"])
            await asyncio.sleep(1.1)  # the API refreshes its vector mirror once a second
            resp = await client.post("/v1/generate",
                                     json={"query": "the capital city of france is what"})
            hit = await resp.json()
            miss = await client.post("/v1/generate", json={"query": "oxygen atomic number"})
    await redis.aclose()
    assert resp.status == 200 and hit["cached"] is True and hit["id"] == body["id"]
    assert miss.status == 202


async def test_the_worker_command_rejects_a_missing_docs_file(tmp_path: Path) -> None:
    env = dict(os.environ, REDIS_URL="redis://127.0.0.1:1/0")
    proc = subprocess.run(
        [sys.executable, "-m", "typeahead", "worker", "--docs", str(tmp_path / "nope.jsonl")],
        cwd=ROOT, env=env, capture_output=True, timeout=60, check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.decode().count("\n") == 1 and "nope.jsonl" in proc.stderr.decode()
