"""The vLLM client against the stand-in: streaming, both error shapes, retries, timeouts,
the concurrency cap and cancellation."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from tests.gen_support import DOCS, settings_for, standin_server
from tests.vllm_standin import DEFAULT_TEXT, DEFAULT_TOKENS, StandIn
from typeahead.errors import UpstreamError
from typeahead.generation.llm import VLLMBackend
from typeahead.generation.prompt import SYSTEM


def backend_for(url: str, **overrides: Any) -> VLLMBackend:
    settings = settings_for(None, llm_url=url + "/v1", llm_model="stand-in/model", **overrides)
    return VLLMBackend(settings, backoff_s=0.01)


async def collect(backend: VLLMBackend, query: str = "rhine") -> str:
    return "".join([p async for p in backend.generate(query, DOCS)])


async def test_streams_the_tokens_in_order_with_the_built_prompt() -> None:
    standin = StandIn()
    async with standin_server(standin) as url:
        backend = backend_for(url)
        assert await collect(backend, "where is paris") == DEFAULT_TEXT
        await backend.close()
    body = standin.requests[0]
    assert body["stream"] is True and body["model"] == "stand-in/model"
    assert body["messages"][0]["content"] == SYSTEM
    assert '"where is paris"' in body["messages"][1]["content"]


@pytest.mark.parametrize("shape", ["error_flat", "error_nested"])
async def test_client_errors_are_not_retried_and_keep_the_message(shape: str) -> None:
    standin = StandIn(mode=shape, error_status=400)
    async with standin_server(standin) as url:
        backend = backend_for(url)
        with pytest.raises(UpstreamError, match="model is not loaded"):
            await collect(backend)
        await backend.close()
    assert standin.calls == 1


@pytest.mark.parametrize("shape", ["error_flat", "error_nested"])
async def test_server_errors_are_retried_then_reported(shape: str) -> None:
    standin = StandIn(mode=shape, error_status=500)
    async with standin_server(standin) as url:
        backend = backend_for(url, llm_retries=2)
        with pytest.raises(UpstreamError, match="HTTP 500: model is not loaded"):
            await collect(backend)
        await backend.close()
    assert standin.calls == 3


async def test_a_transient_503_is_retried_transparently() -> None:
    standin = StandIn(fail_first=1)
    async with standin_server(standin) as url:
        backend = backend_for(url)
        assert await collect(backend) == DEFAULT_TEXT
        await backend.close()
    assert standin.calls == 2


async def test_an_error_chunk_inside_the_stream_fails_the_generation() -> None:
    async with standin_server(StandIn(mode="error_in_stream")) as url:
        backend = backend_for(url)
        with pytest.raises(UpstreamError, match="CUDA out of memory"):
            await collect(backend)
        await backend.close()


async def test_a_dropped_connection_after_tokens_is_an_upstream_error() -> None:
    standin = StandIn(mode="drop")
    async with standin_server(standin) as url:
        backend = backend_for(url)
        with pytest.raises(UpstreamError, match="stream"):
            await collect(backend)
        await backend.close()
    assert standin.calls == 1  # text was already streamed: no silent retry


async def test_a_stalled_stream_hits_the_read_timeout() -> None:
    async with standin_server(StandIn(mode="stall")) as url:
        backend = backend_for(url, llm_read_timeout_s=0.3)
        with pytest.raises(UpstreamError, match=r"read timeout|stream"):
            await collect(backend)
        await backend.close()


async def test_an_unreachable_server_is_a_clear_upstream_error() -> None:
    backend = backend_for("http://127.0.0.1:9", llm_retries=1)
    with pytest.raises(UpstreamError, match="cannot reach"):
        await collect(backend)
    await backend.close()


async def test_cancellation_closes_the_upstream_request() -> None:
    standin = StandIn(token_delay_s=0.5)
    async with standin_server(standin) as url:
        backend = backend_for(url)
        async with contextlib.aclosing(backend.generate("rhine", DOCS)) as stream:
            first = await anext(stream)
        assert first == DEFAULT_TOKENS[0]
        for _ in range(50):
            if standin.disconnects:
                break
            await asyncio.sleep(0.02)
        await backend.close()
    assert standin.disconnects == 1


async def test_concurrent_requests_are_capped() -> None:
    standin = StandIn(ttft_s=0.1)
    async with standin_server(standin) as url:
        backend = backend_for(url, llm_max_concurrency=2)
        results = await asyncio.gather(*(collect(backend) for _ in range(5)))
        await backend.close()
    assert all(r == DEFAULT_TEXT for r in results)
    assert standin.max_active == 2 and standin.calls == 5
