"""GET /metrics after real traffic: latency histograms with sub-millisecond buckets, status
counts, cache hits and misses, queue depth, job durations, time to first token, index
figures and memory; and the merged view of a multi-process server."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from tests import requests_shim as http
from tests.gen_support import read_sse, settings_for, standin_server, worker_task
from tests.lexical_fixtures import build_small_index
from tests.redis_server import RedisServer
from tests.serve_process import serving
from tests.vllm_standin import StandIn
from typeahead.http.app import create_app
from typeahead.suggest.service import SuggestService

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def scrape(client: TestClient) -> Samples:
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    return parse(await resp.text())


async def test_metrics_after_traffic(redis_server: RedisServer, tmp_path: Path) -> None:
    index = build_small_index(tmp_path)
    async with standin_server(StandIn(ttft_s=0.05)) as url:
        settings = settings_for(redis_server.url, llm_url=url, semantic=False)
        app = create_app(settings, SuggestService(index=index, semantic=False))
        async with TestClient(TestServer(app)) as client, worker_task(settings):
            before = await scrape(client)
            for _ in range(20):
                assert (await client.get("/v1/suggest", params={"q": "new"})).status == 200
            assert (await client.get("/v1/suggest")).status == 400
            assert (await client.get("/nowhere/" + "x" * 10)).status == 404
            miss = await client.post("/v1/generate", json={"query": "what is oxygen"})
            assert miss.status == 202
            await read_sse(client, (await miss.json())["stream_url"])
            hit = await client.post("/v1/generate", json={"query": "what is oxygen"})
            assert hit.status == 200
            after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    hist = "typeahead_http_request_duration_seconds"
    suggest = {"route": "/v1/suggest", "method": "GET"}
    assert delta(hist + "_count", **suggest) == 21
    # Sub-millisecond resolution: buckets below 1 ms exist for the hot route.
    les = {
        float(dict(ls)["le"])
        for (n, ls), _ in after.items()
        if n == hist + "_bucket" and dict(ls).get("route") == "/v1/suggest"
    }
    assert {0.0001, 0.0005, 0.001} <= les
    assert delta("typeahead_http_requests_total", status="200", **suggest) == 20
    assert delta("typeahead_http_requests_total", status="400", **suggest) == 1
    # Unknown paths share one label value: ids and junk never become label values.
    assert delta("typeahead_http_requests_total", route="unmatched", status="404") == 1
    assert delta("typeahead_generate_cache_total", result="miss") == 1
    assert delta("typeahead_generate_cache_total", result="hit") == 1
    assert ("typeahead_generate_queue_depth", frozenset()) in after
    assert delta("typeahead_generate_job_duration_seconds_count", outcome="done") == 1
    assert delta("typeahead_llm_time_to_first_token_seconds_count") == 1
    assert delta("typeahead_llm_time_to_first_token_seconds_sum") >= 0.05
    assert value(after, "typeahead_index_entries") == index.entries
    assert value(after, "typeahead_index_build_seconds") > 0
    assert value(after, "typeahead_process_resident_memory_bytes", role="api") > 10_000_000


async def test_metrics_can_be_switched_off(tmp_path: Path) -> None:
    from typeahead.settings import Settings

    app = create_app(
        Settings(generation=False, metrics=False, semantic=False),
        SuggestService(index=build_small_index(tmp_path), semantic=False),
    )
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/metrics")).status == 404


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[str]:
    index = build_small_index(tmp_path)
    with serving(index.path, TYPEAHEAD_GENERATION="false", TYPEAHEAD_SEMANTIC="false"
                 ) as (base, _):
        yield base


def test_multiprocess_scrapes_show_every_worker(two_workers: str) -> None:
    for _ in range(40):
        assert http.get(two_workers + "/v1/suggest?q=new")[0] == 200
    for _ in range(6):  # whichever worker answers, the totals are the same
        with urllib.request.urlopen(two_workers + "/metrics", timeout=5) as resp:
            samples = parse(resp.read().decode())
        count = value(samples, "typeahead_http_requests_total", route="/v1/suggest", status="200")
        assert count == 40
        memory_pids = {
            dict(ls)["pid"]
            for (n, ls), _ in samples.items()
            if n == "typeahead_process_resident_memory_bytes"
        }
        assert len(memory_pids) == 2
