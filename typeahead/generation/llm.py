"""LLM backends behind one interface, and the vLLM (OpenAI-compatible) streaming client.

A backend turns a query and its grounding documents into a stream of text pieces. Two exist:
``VLLMBackend`` here, and the GPU-free ``ExtractiveBackend`` in ``typeahead.generation.extractive``.
Upstream failures become ``UpstreamError`` at this boundary; connection errors and 5xx answers
are retried with backoff until the first token arrives (after that, a retry would repeat text
the listeners already have).

``TYPEAHEAD_LLM_URL`` may list several replicas (``typeahead.generation.endpoints``): each
request goes to one chosen by load and prompt prefix, and a retry goes to another one while
there is one it has not tried. A stream that breaks after its first tokens is resumed on
another replica when there is one: the new stream must repeat the text already sent (decoding
is greedy, temperature 0) and only what follows is passed on; if it says anything else, the
generation fails as before.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing, suppress
from typing import Any, Protocol

import aiohttp
import orjson

from typeahead.embed import Embedder
from typeahead.errors import UpstreamError
from typeahead.generation.endpoints import Endpoint, EndpointPool, llm_bases
from typeahead.generation.extractive import ExtractiveBackend
from typeahead.generation.prompt import SYSTEM, Doc, build_messages, documents_block
from typeahead.settings import Settings
from typeahead.sse import read_events


class Backend(Protocol):
    """Something that streams a grounded summary."""

    @property
    def model_id(self) -> str:
        """Names the model; part of every job id and cache key."""
        ...

    def generate(self, query: str, docs: Sequence[Doc]) -> AsyncGenerator[str, None]:
        """Yield the summary piece by piece; closing the iterator cancels the work."""
        ...

    async def close(self) -> None: ...


CHAT_PATH = "/v1/chat/completions"
# After [DONE], how long and how much to read to reach the end of the body before the
# connection goes back to the pool (else it is closed).
DRAIN_S = 0.5
DRAIN_BYTES = 4096
# Seconds an idle pooled connection is kept: under uvicorn's default keep-alive (5 s), which
# vLLM serves with, so the client never reuses one the server is about to close.
KEEPALIVE_S = 4.0


class _Retryable(Exception):
    """An upstream failure worth another try (connection error, timeout, 5xx)."""


def error_message(body: bytes, status: int | None = None) -> str:
    """The message of a vLLM/OpenAI error body, whichever of its two shapes it has.

    vLLM has answered ``{"object": "error", "message": ...}`` (flat) and, like OpenAI,
    ``{"error": {"message": ..., "type": ...}}`` (nested).
    """
    prefix = f"HTTP {status}: " if status is not None else ""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return prefix + body[:200].decode("utf-8", "replace").strip()
    message = _message_of(obj)
    return prefix + (message if message is not None else str(obj)[:200])


def _message_of(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    err = obj.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err.get("type") or err)
    if isinstance(err, str):
        return err
    if obj.get("object") == "error":
        return str(obj.get("message") or obj.get("type") or "error")
    return None


def is_error_chunk(obj: Any) -> bool:
    return isinstance(obj, dict) and ("error" in obj or obj.get("object") == "error")


def chunk_text(obj: Any) -> str:
    """The text a streamed chunk adds: chat (``delta.content``) or completions (``text``)."""
    choices = obj.get("choices") if isinstance(obj, dict) else None
    if not choices:
        return ""
    choice = choices[0]
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return str(delta.get("content") or "")
    return str(choice.get("text") or "")


class VLLMBackend:
    """Streams ``/v1/chat/completions`` from a vLLM (or any OpenAI-compatible) server."""

    def __init__(self, settings: Settings, *, backoff_s: float = 0.2) -> None:
        bases = llm_bases(settings.llm_url or "")
        if not bases:
            raise ValueError("VLLMBackend needs settings.llm_url")
        self.pool = EndpointPool(settings, bases)
        self.model = settings.llm_model
        self.max_tokens = settings.llm_max_tokens
        self.retries = settings.llm_retries
        self.backoff_s = backoff_s
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if settings.llm_api_key:
            self._headers["Authorization"] = f"Bearer {settings.llm_api_key}"
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.llm_connect_timeout_s,
            sock_read=settings.llm_read_timeout_s,
        )
        self._limit = settings.llm_max_concurrency  # per endpoint
        self._sem = asyncio.Semaphore(settings.llm_max_concurrency * len(bases))
        self._session: aiohttp.ClientSession | None = None

    @property
    def model_id(self) -> str:
        return f"vllm:{self.model}"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limit * len(self.pool.endpoints), limit_per_host=self._limit,
                keepalive_timeout=KEEPALIVE_S, enable_cleanup_closed=True,
            )
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        await self.pool.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def payload(self, query: str, docs: Sequence[Doc]) -> dict[str, Any]:
        return {
            "model": self.model, "messages": build_messages(query, docs), "stream": True,
            "max_tokens": self.max_tokens, "temperature": 0.0,
        }

    async def generate(self, query: str, docs: Sequence[Doc]) -> AsyncGenerator[str, None]:
        body = orjson.dumps(self.payload(query, docs))
        key = affinity_key(docs)
        self.pool.start_probing()
        sent = ""  # the text passed on so far: a resumed stream must repeat it first
        tried: list[Endpoint] = []
        async with self._sem:
            for attempt in range(self.retries + 1):
                ep = self.pool.pick(key, tried)
                tried.append(ep)
                try:
                    with self.pool.using(ep):
                        async with aclosing(_after(self._stream_once(ep, body), sent)) as pieces:
                            async for piece in pieces:
                                sent += piece
                                yield piece
                    self.pool.succeeded(ep)
                    return
                except _Retryable as exc:
                    self.pool.failed(ep, str(exc))
                    if attempt >= self.retries or (sent and not self._untried(tried)):
                        raise UpstreamError(f"LLM request failed: {exc}") from exc
                if not self._untried(tried):
                    await asyncio.sleep(self.backoff_s * 2**attempt * (0.5 + random.random()))

    def _untried(self, tried: list[Endpoint]) -> bool:
        """Whether an admitted endpoint is left that this request has not tried."""
        return any(not e.ejected and e not in tried for e in self.pool.endpoints)

    async def _stream_once(self, ep: Endpoint, body: bytes) -> AsyncGenerator[str, None]:
        resp = await self._open(ep.base + CHAT_PATH, body)
        finished = False
        try:
            async for piece in self._pieces(resp):
                yield piece
            finished = await _drained(resp)
        finally:
            if finished:
                # A stream that ended with [DONE] leaves its connection in the pool: the next
                # job skips the TCP connect (a new connection per job cost ~0.5 ms, and a lost
                # SYN a whole second).
                resp.release()
            else:
                # Closing (not releasing) drops the connection, so the server stops generating
                # when we are cancelled (deadline passed) or the consumer stops reading.
                resp.close()

    async def _open(self, url: str, body: bytes) -> aiohttp.ClientResponse:
        try:
            resp = await self._client().post(url, data=body, headers=self._headers)
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise _Retryable(f"cannot reach {url}: {exc or type(exc).__name__}") from exc
        if resp.status < 400:
            return resp
        try:
            text = await resp.read()
        except (TimeoutError, aiohttp.ClientError):
            text = b""
        finally:
            resp.close()
        message = error_message(text, resp.status)
        if resp.status >= 500:
            raise _Retryable(message)
        raise UpstreamError(f"LLM rejected the request: {message}")

    async def _pieces(self, resp: aiohttp.ClientResponse) -> AsyncIterator[str]:
        try:
            async for event in read_events(resp.content):
                data = event.data
                if data.strip() == "[DONE]":
                    return
                piece = _parse_chunk(data)
                if piece:
                    yield piece
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise _Retryable(f"stream broken: {exc or type(exc).__name__}") from exc
        except TimeoutError as exc:
            raise _Retryable("no data from the LLM within the read timeout") from exc
        raise _Retryable("stream ended without [DONE]")


def affinity_key(docs: Sequence[Doc]) -> bytes:
    """The prompt prefix requests are likely to share, as the endpoint pool hashes it: the
    system prompt and the first grounding document, which open every prompt (questions
    about one subject retrieve the same first document)."""
    return (SYSTEM + "\n" + documents_block(docs[:1])).encode()


async def _after(pieces: AsyncGenerator[str, None], sent: str) -> AsyncGenerator[str, None]:
    """The pieces of a stream past ``sent``, which the stream must begin with (a resumed
    generation); UpstreamError when it says something else, or less."""
    if not sent:
        async with aclosing(pieces):
            async for piece in pieces:
                yield piece
        return
    heard = ""
    async with aclosing(pieces):
        async for piece in pieces:
            if len(heard) >= len(sent):
                yield piece
                continue
            heard += piece
            if not (heard.startswith(sent) or sent.startswith(heard)):
                raise UpstreamError("LLM stream broke, and another replica's answer differs "
                                    "from the text already sent")
            if len(heard) > len(sent):
                yield heard[len(sent):]
    if len(heard) < len(sent):
        raise UpstreamError("LLM stream broke, and another replica's answer is shorter than "
                            "the text already sent")


async def _drained(resp: aiohttp.ClientResponse) -> bool:
    """Read what follows ``[DONE]`` (the end of the chunked body, normally already here), so
    the connection can be reused; False when the server sends more than a little."""
    try:
        async with asyncio.timeout(DRAIN_S):
            rest = await resp.content.read(DRAIN_BYTES + 1)
            while rest and len(rest) <= DRAIN_BYTES:
                more = await resp.content.read(DRAIN_BYTES + 1 - len(rest))
                if not more:
                    return True
                rest += more
            return not rest
    except (TimeoutError, aiohttp.ClientError):
        return False


def _parse_chunk(data: str) -> str:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"LLM sent a malformed chunk: {data[:80]!r}") from exc
    if is_error_chunk(obj):
        raise UpstreamError(f"LLM error: {error_message(data.encode())}")
    return chunk_text(obj)


async def close_quietly(backend: Backend) -> None:
    with suppress(Exception):
        await backend.close()


def make_backend(settings: Settings, embedder: Embedder | None = None) -> Backend:
    """vLLM when ``TYPEAHEAD_LLM_URL`` is set, else the GPU-free extractive summariser.

    Building either is cheap and opens no connection, so the API builds one just to learn the
    ``model_id`` that job ids and cache keys carry.
    """
    if settings.llm_url:
        return VLLMBackend(settings)
    return ExtractiveBackend(embedder)
