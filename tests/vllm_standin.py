"""A stand-in for a vLLM server: the OpenAI chat-completions streaming protocol, with faults.

It answers ``POST /v1/chat/completions`` with ``stream: true`` the way vLLM does (``data:``
chunks with ``choices[0].delta.content``, a final chunk with ``finish_reason``, then
``data: [DONE]``). A test steers it through ``StandIn.mode``:

- ``ok``: stream ``tokens``, waiting ``ttft_s`` before the first and ``token_delay_s`` between;
- ``error_flat`` / ``error_nested``: answer ``error_status`` with vLLM's flat error body
  (``{"object": "error", ...}``) or the nested one (``{"error": {...}}``);
- ``error_in_stream``: start streaming, then send an error chunk (flat shape);
- ``stall``: send headers and one token, then nothing (until the client gives up);
- ``drop``: send one token, then cut the connection without ``[DONE]``.

``fail_first`` makes that many calls answer 503 before the mode applies (retry tests);
``healthy`` is what ``GET /health`` answers (200, else 503). It counts
calls, records every request body (the exact prompt), the first-token delay it imposed, and
how many clients hung up early.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

DEFAULT_TOKENS = ["The ", "answer ", "is ", "in ", "the ", "documents ", "[1]", "."]
DEFAULT_TEXT = "".join(DEFAULT_TOKENS)  # what a client assembles from the default stream


@dataclass
class StandIn:
    mode: str = "ok"
    tokens: list[str] = field(default_factory=lambda: list(DEFAULT_TOKENS))
    ttft_s: float = 0.0
    token_delay_s: float = 0.0
    error_status: int = 400
    fail_first: int = 0
    calls: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    disconnects: int = 0
    active: int = 0
    max_active: int = 0
    model: str = "stand-in/model"
    healthy: bool = True  # what GET /health says (200 or 503), like vLLM's
    health_checks: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        return app

    async def health(self, request: web.Request) -> web.Response:
        self.health_checks += 1
        return web.Response(status=200 if self.healthy else 503)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        arrived = time.perf_counter()
        self.calls += 1
        body = await request.json()
        self.requests.append(body)
        if self.fail_first > 0:
            self.fail_first -= 1
            return _error("error_nested", 503, "server overloaded")
        if self.mode in ("error_flat", "error_nested"):
            return _error(self.mode, self.error_status, "model is not loaded")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self._stream(request, resp, arrived)
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        finally:
            self.active -= 1
        return resp

    async def _stream(
        self, request: web.Request, resp: web.StreamResponse, arrived: float,
    ) -> None:
        await asyncio.sleep(self.ttft_s)
        await resp.write(_chunk({"role": "assistant", "content": ""}, None))
        for i, token in enumerate(self.tokens):
            if i == 0:
                self.ttfts.append(time.perf_counter() - arrived)
            elif self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            await resp.write(_chunk({"content": token}, None))
            if i == 0 and await self._fault(request, resp):
                return
        await resp.write(_chunk({}, "stop"))
        await resp.write(b"data: [DONE]\n\n")

    async def _fault(self, request: web.Request, resp: web.StreamResponse) -> bool:
        """Apply the mode's fault after the first token; True when the stream must end."""
        if self.mode == "stall":
            await asyncio.sleep(3600)
        if self.mode == "drop":
            if request.transport is not None:
                request.transport.abort()
            return True
        if self.mode == "error_in_stream":
            err = {"object": "error", "message": "CUDA out of memory", "type": "InternalError",
                   "code": 500}
            await resp.write(b"data: " + orjson.dumps(err) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            return True
        return False


def _chunk(delta: dict[str, Any], finish: str | None) -> bytes:
    obj = {
        "id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": int(time.time()),
        "model": "stand-in/model",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _error(shape: str, status: int, message: str) -> web.Response:
    if shape == "error_flat":
        body: dict[str, Any] = {"object": "error", "message": message, "type": "BadRequestError",
                                "param": None, "code": status}
    else:
        body = {"error": {"message": message, "type": "BadRequestError", "param": None,
                          "code": status}}
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
