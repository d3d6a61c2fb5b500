"""Several LLM replicas: least-outstanding balancing with prefix affinity, ejection after
failures, re-admission by the /health probe, and no failed job when a replica dies and comes
back (stand-ins on real ports)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from tests.gen_support import DOCS, api_client, read_sse, settings_for, worker_task
from tests.redis_server import RedisServer, free_port
from tests.vllm_standin import DEFAULT_TEXT, StandIn
from typeahead import metrics
from typeahead.errors import ConfigError, UpstreamError
from typeahead.generation.endpoints import EndpointPool, endpoint_label, llm_bases
from typeahead.generation.llm import VLLMBackend, affinity_key
from typeahead.generation.prompt import Doc
from typeahead.settings import Settings


@dataclass
class Replica:
    """A stand-in on a fixed port that can die (its server closes, open streams are cut)
    and come back on the same port."""

    standin: StandIn = field(default_factory=StandIn)
    port: int = field(default_factory=free_port)
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.runner = web.AppRunner(self.standin.app(), access_log=None,
                                    handler_cancellation=True, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@contextlib.asynccontextmanager
async def replicas(*standins: StandIn) -> AsyncIterator[list[Replica]]:
    running = [Replica(s) for s in standins]
    for r in running:
        await r.start()
    try:
        yield running
    finally:
        for r in running:
            await r.stop()


def settings(urls: list[str], **overrides: Any) -> Settings:
    base: dict[str, Any] = {"llm_url": ",".join(urls), "llm_model": "stand-in/model",
                            "llm_probe_interval_s": 0.1, "llm_eject_after": 2}
    base.update(overrides)
    return settings_for(None, **base)


def backend(urls: list[str], **overrides: Any) -> VLLMBackend:
    return VLLMBackend(settings(urls, **overrides), backoff_s=0.01)


async def collect(b: VLLMBackend, query: str = "rhine", docs: list[Doc] = DOCS) -> str:
    return "".join([p async for p in b.generate(query, docs)])


async def until(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def post(client: Any, query: str) -> dict[str, Any]:
    resp = await client.post("/v1/generate", json={"query": query})
    assert resp.status == 202, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def topic(n: int) -> list[Doc]:
    return [Doc(f"doc{n}", f"Title {n}", f"Text about subject {n}.")]


# --- settings and choice ---------------------------------------------------------------------


def test_the_url_list_is_parsed_and_checked() -> None:
    assert llm_bases(" http://a:8000/v1/, http://b:8000 ,http://a:8000,") == [
        "http://a:8000", "http://b:8000"]
    assert endpoint_label("http://user:secret@a:8000") == "http://a:8000"
    with pytest.raises(ConfigError, match="llm_url"):
        Settings.from_env(environ={"TYPEAHEAD_LLM_URL": "http://a:1,ftp://b"})
    with pytest.raises(ConfigError, match="llm_url names no URL"):
        Settings.from_env(environ={"TYPEAHEAD_LLM_URL": " , "})
    with pytest.raises(ConfigError, match="llm_eject_after"):
        Settings.from_env(environ={"TYPEAHEAD_LLM_EJECT_AFTER": "0"})


def test_a_prefix_keeps_to_its_replica_until_that_one_is_much_busier() -> None:
    pool = EndpointPool(settings(["http://a", "http://b", "http://c"],
                                 llm_affinity_slack=2), llm_bases("http://a,http://b,http://c"))
    key = affinity_key(topic(1))
    home = pool.pick(key)
    assert all(pool.pick(key) is home for _ in range(10))
    home.outstanding = 2  # within the slack of the idle others
    assert pool.pick(key) is home
    home.outstanding = 3
    assert pool.pick(key) is not home
    home.outstanding = 0
    # Prefixes spread over the replicas.
    homes = Counter(pool.pick(affinity_key(topic(n))).label for n in range(300))
    assert len(homes) == 3 and min(homes.values()) > 60


def test_without_slack_the_least_busy_replica_is_chosen_and_ejected_ones_are_skipped() -> None:
    pool = EndpointPool(settings(["http://a", "http://b", "http://c"], llm_affinity_slack=0),
                        llm_bases("http://a,http://b,http://c"))
    a, b, c = pool.endpoints
    a.outstanding, b.outstanding, c.outstanding = 3, 1, 2
    assert pool.pick(b"x") is b
    pool.failed(b, "refused")
    assert not b.ejected
    pool.failed(b, "refused")  # llm_eject_after=2
    assert b.ejected and pool.pick(b"x") is c
    assert pool.pick(b"x", tried=[c]) is a
    pool.succeeded(b)
    assert not b.ejected and b.failures == 0
    for ep in pool.endpoints:  # all ejected: all are tried again rather than none
        ep.ejected = True
    assert pool.pick(b"x") is b


# --- probes --------------------------------------------------------------------------------


async def test_probes_eject_an_unhealthy_replica_and_readmit_it() -> None:
    sick = StandIn(healthy=False)
    async with replicas(StandIn(), sick) as (good, bad):
        b = backend([good.url, bad.url])
        pool = b.pool
        try:
            await pool.probe_all()
            assert not pool.endpoints[1].ejected  # one failure of two
            await pool.probe_all()
            assert pool.endpoints[1].ejected and not pool.endpoints[0].ejected
            for _ in range(5):  # every request goes to the healthy one
                assert await collect(b) == DEFAULT_TEXT
            assert sick.calls == 0
            sick.healthy = True
            await pool.probe_all()
            assert not pool.endpoints[1].ejected
        finally:
            await b.close()


# --- a replica dies and comes back -------------------------------------------------------------


async def test_a_replica_that_dies_is_ejected_then_readmitted_and_no_generation_fails() -> None:
    standins = [StandIn(token_delay_s=0.02) for _ in range(3)]
    async with replicas(*standins) as reps:
        b = backend([r.url for r in reps], llm_affinity_slack=0)
        try:
            first = [asyncio.create_task(collect(b, f"q{n}", topic(n))) for n in range(12)]
            await until(lambda: all(s.active for s in standins))
            await reps[1].stop()  # dies with streams open
            rest = [asyncio.create_task(collect(b, f"r{n}", topic(n))) for n in range(12)]
            texts = await asyncio.gather(*first, *rest)
            assert texts == [DEFAULT_TEXT] * 24  # cut streams resumed elsewhere, none failed
            dead = b.pool.endpoints[1]
            await until(lambda: dead.ejected)
            calls = standins[1].calls
            assert await asyncio.gather(*(collect(b, f"s{n}", topic(n)) for n in range(6))) \
                == [DEFAULT_TEXT] * 6
            assert standins[1].calls == calls  # ejected: nothing sent to it
            await reps[1].start()  # back on its port
            await until(lambda: not dead.ejected)
            await asyncio.gather(*(collect(b, f"t{n}", topic(n)) for n in range(12)))
            assert standins[1].calls > calls
            text = metrics.get().exposition().decode()
            label = f'endpoint="{reps[1].url}"'
            assert f"typeahead_llm_endpoint_ejected{{{label}}} 0.0" in text
            assert f"typeahead_llm_endpoint_errors_total{{{label},kind=\"request\"}}" in text
        finally:
            await b.close()


async def test_jobs_survive_a_replica_dying_and_coming_back(redis_server: RedisServer) -> None:
    standins = [StandIn(token_delay_s=0.02) for _ in range(3)]
    async with replicas(*standins) as reps:
        s = settings_for(redis_server.url, llm_url=",".join(r.url for r in reps),
                         llm_probe_interval_s=0.1, llm_eject_after=2, generate_rate_per_min=0,
                         redis_timeout_s=2.0)  # a busy test machine is no Redis outage
        async with api_client(s) as client, worker_task(s, concurrency=8) as worker:
            posted = [await post(client, f"what is subject {n}") for n in range(8)]
            await until(lambda: standins[0].active + standins[1].active + standins[2].active)
            await reps[0].stop()
            posted += [await post(client, f"what is topic {n}") for n in range(8)]
            streams = await asyncio.gather(*(read_sse(client, body["stream_url"])
                                             for body in posted))
            pool = worker.backend.pool  # type: ignore[attr-defined]
            await until(lambda: pool.endpoints[0].ejected)  # the probes saw it die
            await reps[0].start()
            await until(lambda: not pool.endpoints[0].ejected)
    for events in streams:
        assert events[-1][0] == "done", events[-1]


# --- a resumed stream must repeat what was sent -------------------------------------------------


async def test_a_resumed_stream_that_says_something_else_fails() -> None:
    async with replicas(StandIn(mode="drop"), StandIn(tokens=["Another ", "text."])) as reps:
        b = backend([r.url for r in reps], llm_affinity_slack=0)
        try:
            b.pool.endpoints[1].outstanding = 1  # the dropping one is chosen first
            with pytest.raises(UpstreamError, match="differs"):
                await collect(b)
        finally:
            b.pool.endpoints[1].outstanding = 0
            await b.close()


async def test_a_stream_cut_after_its_first_token_is_resumed_without_repeating_it() -> None:
    async with replicas(StandIn(mode="drop"), StandIn()) as reps:
        b = backend([r.url for r in reps], llm_affinity_slack=0)
        try:
            b.pool.endpoints[1].outstanding = 1
            pieces = [p async for p in b.generate("rhine", DOCS)]
        finally:
            b.pool.endpoints[1].outstanding = 0
            await b.close()
    assert "".join(pieces) == DEFAULT_TEXT
    assert reps[0].standin.calls == 1 and reps[1].standin.calls == 1


# --- readiness ---------------------------------------------------------------------------------


async def test_ready_while_any_replica_lists_its_models() -> None:
    from typeahead.http.readiness import Readiness

    dead = f"http://127.0.0.1:{free_port()}"
    async with replicas(StandIn()) as (alive,):
        probes = Readiness(settings([dead, alive.url + "/v1"]))
        try:
            assert await probes.llm() is None
        finally:
            await probes.close()
    probes = Readiness(settings([dead, alive.url]))
    try:
        reason = await probes.llm()
        assert reason is not None and dead in reason and alive.url in reason
    finally:
        await probes.close()


async def test_a_resumed_stream_shorter_than_what_was_sent_fails() -> None:
    async with replicas(StandIn(mode="drop", tokens=["The whole ", "answer."]),
                        StandIn(tokens=["The"])) as reps:
        b = backend([r.url for r in reps], llm_affinity_slack=0)
        try:
            b.pool.endpoints[1].outstanding = 1
            with pytest.raises(UpstreamError, match="shorter"):
                await collect(b)
        finally:
            b.pool.endpoints[1].outstanding = 0
            await b.close()
