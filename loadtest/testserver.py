"""A small aiohttp server to test the load tester against (tests, validation, suite stand-in).

Routes: ``GET /fast`` (answers at once), ``GET /sleep?ms=N``, ``GET /status/{code}``, and a
stand-in for the typeahead API (``/readyz``, ``/v1/suggest``, ``POST /v1/generate``,
``/v1/generate/{id}/stream``). ``stall_every_s`` blocks the whole event loop for ``stall_ms``
once per period, like a stop-the-world pause; ``/_timings`` returns the server-side handler
times as an encoded HdrHistogram (``/_timings?reset=1`` clears them).

Run: ``python -m loadtest.testserver --port 8089 [--stall-every 1 --stall-ms 200]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp import web
from hdrh.histogram import HdrHistogram

from loadtest.stats import LATENCY_MAX_US, SIG_FIGS
from typeahead.numbers import float_arg, int_arg


@dataclass(frozen=True)
class ServerOptions:
    stall_every_s: float = 0.0  # 0: never stall
    stall_ms: float = 200.0
    suggest_delay_ms: float = 0.0
    token_delay_ms: float = 20.0
    tokens: int = 3


@dataclass
class _State:
    options: ServerOptions
    timings: HdrHistogram
    cached: set[str]
    jobs: dict[str, str]


STATE = web.AppKey("state", _State)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _timing(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    response = await handler(request)
    if request.path != "/_timings":
        elapsed = round((time.perf_counter() - start) * 1e6)
        request.app[STATE].timings.record_value(min(LATENCY_MAX_US, max(1, elapsed)))
    return response


async def _fast(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _sleep(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("ms", "0")) / 1000)
    return web.Response(text="ok")


async def _status(request: web.Request) -> web.Response:
    return web.Response(status=int(request.match_info["code"]), text="status")


async def _ready(request: web.Request) -> web.Response:
    return web.json_response({"status": "ready"})


async def _suggest(request: web.Request) -> web.Response:
    delay = request.app[STATE].options.suggest_delay_ms
    if delay:
        await asyncio.sleep(delay / 1000)
    q = request.query.get("q", "")
    body = {
        "query": q,
        "suggestions": [{"text": q + "x", "score": 1.0, "source": "prefix"}],
        "results": [],
        "intent": {"label": "informational", "confidence": 0.9},
        "offer_generate": True,
    }
    return web.json_response(body)


async def _generate(request: web.Request) -> web.Response:
    state = request.app[STATE]
    query = str((await request.json()).get("query", ""))
    job_id = f"job{len(state.jobs)}"
    if query in state.cached:
        body = {"id": job_id, "status": "done", "summary": "s", "sources": [], "cached": True}
        return web.json_response(body)
    state.jobs[job_id] = query
    url = f"/v1/generate/{job_id}/stream"
    return web.json_response({"id": job_id, "status": "queued", "stream_url": url}, status=202)


async def _stream(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    query = state.jobs.get(request.match_info["id"])
    if query is None:
        raise web.HTTPNotFound()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for i in range(state.options.tokens):
        await asyncio.sleep(state.options.token_delay_ms / 1000)
        await response.write(f"event: token\ndata: t{i}\n\n".encode())
    state.cached.add(query)
    done = orjson.dumps({"id": request.match_info["id"], "status": "done", "summary": "s"})
    await response.write(b"event: done\ndata: " + done + b"\n\n")
    await response.write_eof()
    return response


async def _timings(request: web.Request) -> web.Response:
    state = request.app[STATE]
    blob = bytes(state.timings.encode()).decode("ascii")
    if request.query.get("reset"):
        state.timings.reset()
    return web.json_response({"histogram": blob})


async def _stalls(app: web.Application) -> AsyncIterator[None]:
    options = app[STATE].options
    task = asyncio.create_task(_stall_loop(options)) if options.stall_every_s > 0 else None
    yield
    if task is not None:
        task.cancel()


async def _stall_loop(options: ServerOptions) -> None:
    while True:
        await asyncio.sleep(options.stall_every_s)
        time.sleep(options.stall_ms / 1000)  # blocks the loop on purpose: the stall


def build_app(options: ServerOptions | None = None) -> web.Application:
    app = web.Application(middlewares=[_timing])
    app[STATE] = _State(options or ServerOptions(), HdrHistogram(1, LATENCY_MAX_US, SIG_FIGS),
                        set(), {})
    app.cleanup_ctx.append(_stalls)
    app.router.add_get("/fast", _fast)
    app.router.add_get("/sleep", _sleep)
    app.router.add_get("/status/{code}", _status)
    app.router.add_get("/readyz", _ready)
    app.router.add_get("/v1/suggest", _suggest)
    app.router.add_post("/v1/generate", _generate)
    app.router.add_get("/v1/generate/{id}/stream", _stream)
    app.router.add_get("/_timings", _timings)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.testserver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int_arg(1, 65535), default=8089)
    parser.add_argument("--stall-every", type=float_arg(0.0), default=0.0, help="seconds; 0: never")
    parser.add_argument("--stall-ms", type=float_arg(0.0), default=200.0)
    parser.add_argument("--suggest-delay-ms", type=float_arg(0.0), default=0.0)
    args, _ = parser.parse_known_args(argv)  # tolerates serve-style extra flags (suite tests)
    options = ServerOptions(args.stall_every, args.stall_ms, args.suggest_delay_ms)
    # A deep accept backlog: otherwise connections opened during a stall overflow aiohttp's
    # default of 128 and wait for a 1 s SYN retry, which would blur the stall under test.
    web.run_app(build_app(options), host=args.host, port=args.port, print=None,
                access_log=None, backlog=4096)


if __name__ == "__main__":
    main()
