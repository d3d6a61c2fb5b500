"""Inline jobs (``typeahead.generation.inline``): the API process runs the job it creates, hands
tokens to
its own streams before Redis has them, and still keeps the queue's guarantees: a lease that a
worker takes over when the process dies or shuts down, refused writes from a superseded
attempt, a bound on inline jobs, and streams that never skip or repeat an event."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from tests.gen_support import (
    api_client,
    docs_index_dir,
    read_sse,
    read_sse_events,
    settings_for,
    standin_server,
    text_of,
    worker_task,
)
from tests.redis_server import RedisServer
from tests.test_gen_queue import wait_for
from tests.vllm_standin import DEFAULT_TEXT, DEFAULT_TOKENS, StandIn
from typeahead import keys
from typeahead.generation.hub import StreamHub
from typeahead.generation.queue import Event, Jobs, connect, job_id
from typeahead.generation.routes import GENERATION
from typeahead.sse import parse_events, read_events

FULL = DEFAULT_TEXT


def inline_settings(redis_url: str, llm_url: str, root: Path, **overrides: Any) -> Any:
    """Jobs run inline, grounded on the DOCS fixture (an index directory under ``root``)."""
    return settings_for(redis_url, llm_url=llm_url, **{
        "generate_inline_jobs": 8, "index_dir": docs_index_dir(root), **overrides})


@contextlib.asynccontextmanager
async def inline_api(redis_url: str, standin: StandIn, root: Path) -> AsyncIterator[Any]:
    """An API that runs its jobs inline against ``standin``, with no worker."""
    settings = lambda url: inline_settings(redis_url, url, root)  # noqa: E731
    async with standin_server(standin) as url, api_client(settings(url)) as client:
        yield client


async def post(client: Any, query: str) -> dict[str, Any]:
    resp = await client.post("/v1/generate", json={"query": query})
    assert resp.status == 202, await resp.text()
    return dict(await resp.json())


async def record(client: Any, job: str) -> dict[str, str]:
    return await client.app[GENERATION].jobs.record(job)


async def test_the_api_runs_its_job_without_any_worker(
    redis_server: RedisServer, tmp_path: Path,
) -> None:
    standin = StandIn(token_delay_s=0.02)
    async with inline_api(redis_server.url, standin, tmp_path) as client:
        body = await post(client, "where does the rhine flow")
        assert body["status"] == "running"
        events = await read_sse(client, body["stream_url"])
        rec = await record(client, body["id"])
        again = await client.post("/v1/generate", json={"query": "where does the rhine flow"})
        cached = await again.json()
    assert [d for e, d in events if e == "token"] == DEFAULT_TOKENS
    assert events[-1][0] == "done" and orjson.loads(events[-1][1])["summary"] == FULL.strip()
    assert rec["worker"].startswith("api-") and rec["attempt"] == "1"
    assert rec["status"] == "done" and rec["completions"] == "1"
    assert again.status == 200 and cached["cached"] is True
    assert standin.calls == 1


async def test_a_job_is_grounded_on_documents_searched_during_its_claim(
    redis_server: RedisServer, tmp_path: Path,
) -> None:
    """The documents search fills the claim's Redis round trip; a job asked again (it exists
    now) is remembered and costs no second search."""
    standin = StandIn()
    async with inline_api(redis_server.url, standin, tmp_path) as client:
        inline = client.app[GENERATION].inline
        searches: list[str] = []
        search = inline._search
        inline._search = lambda q: searches.append(q) or search(q)  # type: ignore[method-assign]
        body = await post(client, "capital of france")
        await read_sse(client, body["stream_url"])
        again = await client.post("/v1/generate", json={"query": "Capital of  France"})
        assert again.status == 200
        again = await client.post("/v1/generate", json={"query": "capital of france"})
    assert searches == ["capital of france"]
    user = standin.requests[0]["messages"][1]["content"]
    assert '[1] title: "Paris"' in user
    assert not inline.worth_prefetching(body["id"])


async def test_the_documents_search_runs_off_the_event_loop(
    redis_server: RedisServer, tmp_path: Path,
) -> None:
    """An inline job's grounding search (milliseconds of CPU) runs on the search thread: the
    event loop, which answers the keystrokes, keeps answering while a search is under way."""
    standin = StandIn()
    async with inline_api(redis_server.url, standin, tmp_path) as client:
        inline = client.app[GENERATION].inline
        started, release = threading.Event(), threading.Event()
        threads: list[int] = []
        search = inline._search

        def held(query: str) -> Any:
            threads.append(threading.get_ident())
            started.set()
            release.wait(5)  # on the loop, this would hold every request below
            return search(query)

        inline._search = held
        posting = asyncio.create_task(post(client, "capital of france"))
        assert await asyncio.to_thread(started.wait, 5)
        during = await client.get(f"/v1/generate/{'0' * 32}")  # a request, answered
        still_searching = not release.is_set()
        release.set()
        body = await posting
        events = await read_sse(client, body["stream_url"])
    assert during.status == 404 and still_searching
    assert threads and threading.get_ident() not in threads
    assert events[-1][0] == "done"
    assert '[1] title: "Paris"' in standin.requests[0]["messages"][1]["content"]


async def test_redis_holds_the_same_events_under_the_ids_the_streams_got(
    redis_server: RedisServer, tmp_path: Path,
) -> None:
    """A client streaming from this process and one reading Redis afterwards (another replica,
    or a reconnect) see one event sequence: same ids, same order, nothing missing."""
    standin = StandIn(token_delay_s=0.05)
    async with inline_api(redis_server.url, standin, tmp_path) as client:
        body = await post(client, "oxygen atomic number")
        live = await read_sse_events(client, body["stream_url"])
        stored = await client.app[GENERATION].jobs.events_since(body["id"], "0-0")
    assert [(e.id, e.type, e.data) for e in stored] == live
    ids = [e.id for e in stored]
    base = ids[0].split("-")[0]
    assert ids == [f"{base}-{n}" for n in range(1, len(ids) + 1)]


async def test_late_joiners_and_resumes_get_every_token_once(
    redis_server: RedisServer, tmp_path: Path,
) -> None:
    standin = StandIn(token_delay_s=0.1)
    async with inline_api(redis_server.url, standin, tmp_path) as client:
        body = await post(client, "paris landmarks")
        seen: list[str] = []
        early = asyncio.create_task(read_sse(client, body["stream_url"],
                                             on_event=lambda e, d: seen.append(d)))
        while len(seen) < 2:
            await asyncio.sleep(0.01)
        late = asyncio.create_task(read_sse(client, body["stream_url"]))
        while len(seen) < 4:
            await asyncio.sleep(0.01)
        stored = await client.app[GENERATION].jobs.events_since(body["id"], "0-0")
        resumed_from = stored[1].id
        async with client.get(body["stream_url"],
                              headers={"Last-Event-ID": resumed_from}) as resp:
            rest = parse_events(await resp.read())
        first, second = await early, await late
    for events in (first, second):
        assert [d for e, d in events if e == "token"] == DEFAULT_TOKENS
        assert events[-1][0] == "done"
    tokens_after = [event.data for event in rest if event.event == "token"]
    assert tokens_after == DEFAULT_TOKENS[2:]
    assert standin.calls == 1


async def test_a_dead_owners_job_goes_to_a_worker_once_its_lease_lapses(
    redis_server: RedisServer,
) -> None:
    """An API process that claimed a job and died: a worker queues it when the lease expires,
    runs the next attempt, and the dead attempt can neither stream nor complete."""
    standin = StandIn()
    redis = connect(redis_server.url)
    jobs = Jobs(redis)
    job = job_id("rhine length", "p", "m")
    try:
        async with standin_server(standin) as url:
            settings = settings_for(redis_server.url, llm_url=url)
            sub = await jobs.submit(job, "rhine length", deadline_s=30, max_depth=10,
                                    owner="api-dead", lease_s=0.3)
            assert sub.outcome == "claimed" and sub.status == "running"
            assert await jobs.depth() == 0  # not on the queue while its owner holds it
            async with worker_task(settings) as worker:
                await wait_for(lambda: worker.completed == 1)
        rec = await jobs.record(job)
        assert rec["status"] == "done" and rec["attempt"] == "2" and rec["worker"] == "w1"
        assert rec["completions"] == "1"
        events = await jobs.events_since(job, "0-0")
        assert events[0].type == "reset"
        assert not await jobs.tokens_at(job, 1, [("1-1", "zombie")])
        assert not await jobs.complete(job, 1, b'{"summary": "zombie"}', cache_ttl_s=60)
        assert await redis.zscore(keys.LEASES, job) is None
        assert standin.calls == 1
    finally:
        await redis.aclose()


async def test_a_renewed_lease_keeps_a_slow_job_with_its_owner(
    redis_server: RedisServer, tmp_path: Path,
) -> None:
    """Generation that outlasts the lease several times over stays inline: no takeover, one
    upstream call, no reset."""
    standin = StandIn(token_delay_s=0.2)  # ~2 s against a 0.5 s lease
    async with standin_server(standin) as url:
        settings = inline_settings(redis_server.url, url, tmp_path)
        async with api_client(settings) as client, worker_task(settings) as worker:
            body = await post(client, "slow but alive")
            events = await read_sse(client, body["stream_url"])
            rec = await record(client, body["id"])
    assert "reset" not in [e for e, _ in events] and text_of(events) == FULL
    assert rec["worker"].startswith("api-") and rec["attempt"] == "1"
    assert standin.calls == 1 and worker.completed == 0


async def test_shutting_down_hands_running_jobs_to_the_workers(
    redis_server: RedisServer, tmp_path: Path,
) -> None:
    standin = StandIn(token_delay_s=0.1)
    async with standin_server(standin) as url:
        settings = inline_settings(redis_server.url, url, tmp_path, job_claim_idle_s=5.0)
        queue_only = settings_for(redis_server.url, llm_url=url, job_claim_idle_s=5.0)
        async with worker_task(queue_only) as worker:
            async with api_client(settings) as client:
                body = await post(client, "handed over")
                await wait_for(lambda: standin.active == 1)
            # The lease is 5 s, but a closing process gives its jobs back at once.
            await wait_for(lambda: worker.completed == 1, timeout=6.0)
            async with api_client(queue_only) as other:
                events = await read_sse(other, body["stream_url"])
                rec = await record(other, body["id"])
    assert text_of(events) == FULL and events[-1][0] == "done"
    assert rec["worker"] == "w1" and rec["attempt"] == "2"
    assert standin.calls == 2


def job_starts() -> dict[str, float]:
    """``typeahead_generate_job_starts_total`` by runner, from this process's /metrics text."""
    from typeahead import metrics

    out: dict[str, float] = {}
    for line in metrics.get().exposition().decode().splitlines():
        if line.startswith("typeahead_generate_job_starts_total{"):
            runner = line.split('runner="', 1)[1].split('"', 1)[0]
            out[runner] = float(line.rsplit(" ", 1)[1])
    return out


async def test_beyond_its_inline_slots_a_process_queues_jobs(
    redis_server: RedisServer, tmp_path: Path,
) -> None:
    standin = StandIn(token_delay_s=0.05)
    async with standin_server(standin) as url:
        settings = inline_settings(redis_server.url, url, tmp_path, generate_inline_jobs=1)
        async with api_client(settings) as client, worker_task(settings):
            before = job_starts()
            first = await post(client, "first question")
            second = await post(client, "second question")
            assert (first["status"], second["status"]) == ("running", "queued")
            streams = await asyncio.gather(read_sse(client, first["stream_url"]),
                                           read_sse(client, second["stream_url"]))
            runners = [(await record(client, b["id"]))["worker"] for b in (first, second)]
            third = await post(client, "third question")  # the slot is free again
            after = job_starts()
    assert all(text_of(events) == FULL for events in streams)
    assert runners[0].startswith("api-") and runners[1] == "w1"
    assert third["status"] == "running"
    started = {k: after.get(k, 0) - before.get(k, 0) for k in ("inline", "queue")}
    assert started == {"inline": 2, "queue": 1}


async def test_redis_stopping_mid_job_ends_the_stream_and_the_api_recovers(
    redis_server: RedisServer, tmp_path: Path,
) -> None:
    standin = StandIn(token_delay_s=0.2)
    async with inline_api(redis_server.url, standin, tmp_path) as client:
        client.app[GENERATION].hub.outage_s = 0.5  # an outage, not a stall to wait out
        body = await post(client, "during an outage")
        seen: list[str] = []
        stream = asyncio.create_task(read_sse(client, body["stream_url"],
                                              on_event=lambda e, d: seen.append(e)))
        await wait_for(lambda: len(seen) >= 1)
        redis_server.stop()
        events = await asyncio.wait_for(stream, 10)
        redis_server.start()
        for _ in range(100):
            resp = await client.post("/v1/generate", json={"query": "after the outage"})
            if resp.status == 202:
                break
            await asyncio.sleep(0.1)
        after = await resp.json()
        done = await read_sse(client, after["stream_url"])
    assert events[-1][0] == "error"
    assert text_of(done) == FULL


async def test_the_extractive_summariser_never_runs_inline(redis_server: RedisServer) -> None:
    settings = settings_for(redis_server.url, generate_inline_jobs=8)  # no LLM URL
    async with api_client(settings) as client:
        assert client.app[GENERATION].inline is None
        body = await post(client, "what is oxygen")
    assert body["status"] == "queued"


async def test_publish_hands_on_only_the_next_event_of_each_listener(
    redis_server: RedisServer,
) -> None:
    """A listener takes a published event only when it is the one right after its last; one
    that is behind waits for the reader (Redis), so nothing is skipped or repeated."""
    redis = connect(redis_server.url)
    hub = StreamHub(Jobs(redis), Jobs(redis), period_s=0.2)
    try:
        at_start = await hub.subscribe("j", "0-0")
        behind = await hub.subscribe("j", "0-0")
        behind.last = (0, 0)
        at_start.last = (5, 1)
        hub.publish("j", "5-1", Event("5-2", "token", "b"))
        hub.publish("j", "5-2", Event("5-3", "token", "c"))
        chunk, final = await asyncio.wait_for(at_start.next(), 1)
        assert not final and chunk.count(b"event: token") == 2 and b"id: 5-3" in chunk
        assert behind.queue.empty() and behind.last == (0, 0)
        hub.publish("j", "5-3", Event("5-4", "done", "{}"))
        chunk, final = await asyncio.wait_for(at_start.next(), 1)
        assert final and b"event: done" in chunk
        hub.publish("other", "0-0", Event("1-1", "token", "x"))  # nobody watches: ignored
    finally:
        hub.unsubscribe(behind)
        await hub.close()
        await redis.aclose()


async def test_the_api_grounds_inline_jobs_on_the_index_it_serves(
    redis_server: RedisServer, tmp_path: Path,
) -> None:
    """One copy of the documents per process: the one its instant results come from."""
    from aiohttp.test_utils import TestClient, TestServer

    from tests.student_fixtures import tiny_student
    from tests.test_semantic_suggest import build
    from typeahead.generation.grounding import ServedDocs
    from typeahead.http.app import create_app
    from typeahead.suggest.service import SuggestService

    tiny_student(tmp_path / "student")
    index = build(tmp_path, tmp_path / "student")
    standin = StandIn()
    async with standin_server(standin) as url:
        settings = settings_for(redis_server.url, llm_url=url, generate_inline_jobs=8,
                                index_dir=tmp_path / "idx", student_dir=tmp_path / "student")
        app = create_app(settings, SuggestService(index=index))
        async with TestClient(TestServer(app)) as client:
            inline = app[GENERATION].inline
            assert isinstance(inline.retriever, ServedDocs)
            assert inline.retriever.served() is index.semantic.docs
            body = await post(client, "cheap flights to paris")
            events = await read_sse(client, body["stream_url"])
    assert events[-1][0] == "done"
    user = standin.requests[0]["messages"][1]["content"]
    assert '[1] title: "Paris"' in user and "Cheap flights to Paris. Paris is in France." in user


async def test_another_replica_streams_an_inline_job_through_redis(
    redis_server: RedisServer, tmp_path: Path,
) -> None:
    """A job running inline in replica A is streamed by a client of replica B (the load
    balancer sent the stream there): same events, same ids, in order, then done."""
    standin = StandIn(token_delay_s=0.05)
    async with standin_server(standin) as url:
        settings = inline_settings(redis_server.url, url, tmp_path)
        async with api_client(settings) as a, api_client(settings) as b:
            body = await post(a, "the rhine and its tributaries")
            on_a, on_b = await asyncio.gather(read_sse_events(a, body["stream_url"]),
                                              read_sse_events(b, body["stream_url"]))
            joined = await b.post("/v1/generate", json={"query": "the rhine and its tributaries"})
    assert on_b == on_a and [d for _, e, d in on_b if e == "token"] == DEFAULT_TOKENS
    assert on_b[-1][1] == "done" and standin.calls == 1
    assert joined.status == 200  # answered by then: B serves the cached summary


async def test_an_inline_job_nobody_listens_to_any_more_is_cancelled(
    redis_server: RedisServer, tmp_path: Path,
) -> None:
    """The API process checks its own running jobs' listeners as a worker does: a client that
    hangs up gets the job failed, the LLM request closed and the slot back."""
    standin = StandIn(tokens=["w "] * 40, token_delay_s=0.1)  # 4 s unless cancelled
    async with standin_server(standin) as url:
        settings = inline_settings(redis_server.url, url, tmp_path, generate_inline_jobs=1,
                                   generate_unwatched_grace_s=0.3)
        async with api_client(settings) as client:
            body = await post(client, "what is oxygen")
            async with client.get(body["stream_url"]) as resp:
                async for event in read_events(resp.content):
                    if event.event == "token":
                        break  # generation is under way: hang up
            await wait_for(lambda: standin.disconnects == 1, timeout=3.0)
            rec = await record(client, body["id"])
            again = await post(client, "what is nitrogen")  # the one slot is free again
    assert rec["status"] == "failed" and rec["error"] == keys.UNWATCHED_ERROR
    assert rec["worker"].startswith("api-") and again["status"] == "running"
