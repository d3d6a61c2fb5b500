"""Shared helpers for the generation-tier tests: an app with an error middleware, a worker
task, the vLLM stand-in on a real port, and an SSE reader."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.vllm_standin import StandIn
from typeahead.embed import Embedder, Student
from typeahead.errors import TypeaheadError
from typeahead.generation.extractive import HashingEmbedder
from typeahead.generation.grounding import Grounding, Retriever
from typeahead.generation.llm import Backend, make_backend
from typeahead.generation.prompt import Doc
from typeahead.generation.queue import Jobs, layout_for, open_redis
from typeahead.generation.routes import setup_generation
from typeahead.generation.worker import Worker
from typeahead.retrieval import DocsIndex, build_docs_index
from typeahead.settings import Settings
from typeahead.sse import read_events

DOCS = [
    Doc("paris", "Paris", "Paris is the capital and largest city of France. It lies on the Seine. "
        "The city is known for the Eiffel Tower, which was built in 1889."),
    Doc("rhine", "Rhine", "The Rhine is a river that flows from the Swiss Alps to the North Sea. "
        "It forms part of the border between France and Germany."),
    Doc("oxygen", "Oxygen", "Oxygen is a chemical element with symbol O and atomic number 8. "
        "It is a highly reactive nonmetal and an oxidizing agent."),
]


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    try:
        return await handler(request)
    except TypeaheadError as exc:
        body = {"error": {"code": exc.code, "message": exc.message}}
        return web.Response(body=orjson.dumps(body), status=exc.status,
                            content_type="application/json", headers=exc.headers())


def settings_for(redis_url: str | None, **overrides: Any) -> Settings:
    """Test settings; jobs go through the queue unless ``generate_inline_jobs`` says otherwise
    (``inline_settings``), so that the worker tests test the worker."""
    base: dict[str, Any] = {"redis_url": redis_url, "job_claim_idle_s": 0.5,
                            "job_deadline_s": 10.0, "generate_inline_jobs": 0}
    base.update(overrides)
    return Settings.from_env(environ={}, **base)


def grounding(docs: Sequence[Doc], embedder: Embedder) -> Grounding:
    """Grounding on ``docs`` through the documents index, built in memory."""
    return Grounding(DocsIndex.in_memory([(d.id, d.title, d.text) for d in docs], embedder))


def docs_index_dir(root: Path) -> Path:
    """An index directory whose only content is the documents index of the DOCS fixture, built
    with the packaged student: what an API process that runs jobs inline grounds them on."""
    source = root / "docs-source.jsonl"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(b"\n".join(
        orjson.dumps({"id": d.id, "title": d.title, "text": d.text}) for d in DOCS))
    build_docs_index(source, root / "docs", Student.load(None))
    return root


def api_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    setup_generation(app, settings)
    return app


@contextlib.asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    client: TestClient[Any, Any] = TestClient(TestServer(api_app(settings)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def standin_server(standin: StandIn) -> AsyncIterator[str]:
    server = TestServer(standin.app())
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def worker_task(
    settings: Settings, *, name: str = "w1", backend: Backend | None = None,
    concurrency: int = 4, docs: Retriever | None = None, **kwargs: Any,
) -> AsyncIterator[Worker]:
    """A worker on the event loop, on whichever store ``settings`` names (one Redis, a
    cluster, Sentinels); ``docs`` defaults to the shared DOCS fixture."""
    redis = open_redis(settings, read_timeout_s=5.0)
    docs = docs or grounding(DOCS, HashingEmbedder())
    index = docs.index if isinstance(docs, Grounding) else None
    backend = backend or make_backend(settings, index.student if index else HashingEmbedder())
    worker = Worker(Jobs(redis, layout=layout_for(settings)), backend, docs, settings,
                    name=name, concurrency=concurrency, **kwargs)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await backend.close()
        await redis.aclose()


async def read_sse_events(
    client: TestClient[Any, Any], path: str, *, on_event: Callable[[str, str], None] | None = None,
) -> list[tuple[str, str, str]]:
    """Every (id, event, data) of an event stream until done or error; comments skipped."""
    events: list[tuple[str, str, str]] = []
    async with client.get(path) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        async for event in read_events(resp.content):
            events.append((event.id, event.event, event.data))
            if on_event is not None:
                on_event(event.event, event.data)
            if event.event in ("done", "error"):
                break
    return events


async def read_sse(
    client: TestClient[Any, Any], path: str, *, on_event: Callable[[str, str], None] | None = None,
) -> list[tuple[str, str]]:
    """Every (event, data) of an event stream until done or error; comments skipped."""
    return [(name, data) for _, name, data in
            await read_sse_events(client, path, on_event=on_event)]


def text_of(events: list[tuple[str, str]]) -> str:
    """The text a client shows: tokens, restarted at every reset."""
    text = ""
    for name, data in events:
        if name == "reset":
            text = ""
        elif name == "token":
            text += data
    return text
