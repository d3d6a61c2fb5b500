"""Sending one planned request and recording what happened to it.

Latency is always measured from the request's *intended* send time (the schedule), not from
when it actually went out, on ``time.perf_counter`` (uvloop's ``loop.time()`` only has
millisecond resolution), so time the request spent waiting on the generator or on a stalled
server counts against the server (no coordinated omission).

Simple requests (suggest, plain GETs, generate POSTs) go through the lean HTTP/1.1 client in
:mod:`loadtest.http1` unless ``Target.client`` is ``"aiohttp"``; SSE streams and https always
use aiohttp.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin

import aiohttp
import orjson
from yarl import URL

from loadtest.http1 import CLIENTS, HttpFailure, Origin, Pool, Pools, split_url
from loadtest.stats import Stats
from typeahead.sse import read_events

_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class Target:
    base: str  # e.g. http://127.0.0.1:8080
    stream_timeout_s: float = 60.0
    follow_streams: bool = True
    client: str = "lean"  # one of CLIENTS: the HTTP client for simple requests

    def __post_init__(self) -> None:
        assert self.client in CLIENTS, self.client


class RequestFailed(Exception):
    """A request ended in an error of ``kind`` (recorded, never raised out of ``send``).

    Errors of a planned request count under its kind (``suggest``, ``generate``, ``plain``):
    a failed generate never said whether it was cached.
    """

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class Client:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        target: Target,
        stats: Stats,
        t0: float,
        *,
        pools: Pools | None = None,
        timeout_s: float = 10.0,
    ):
        self.session = session
        self.target = target
        self.stats = stats
        self.t0 = t0
        self.pools = pools  # None: every request goes through aiohttp
        self.timeout_s = timeout_s  # per lean request; aiohttp's session has its own
        self.in_flight = 0  # raised by the scheduler at launch, lowered when the task ends
        split = split_url(target.base)
        self._base_origin: Origin | None = split[0] if split else None

    def _elapsed_us(self, intended: float) -> float:
        return (time.perf_counter() - intended) * 1e6

    def _ok(self, cls: str, intended: float) -> None:
        self.stats.record(cls, self._elapsed_us(intended), intended - self.t0)

    async def send(self, intended: float, kind: str, payload: str) -> None:
        self.stats.record_lag(self._elapsed_us(intended))
        self.stats.sent += 1
        try:
            if kind == "suggest":
                await self._get("suggest", "/v1/suggest?q=" + quote(payload), intended)
            elif kind == "generate":
                await self._generate(payload, intended)
            else:
                await self._get("plain", payload, intended)
        except (RequestFailed, HttpFailure) as exc:
            self.stats.record_error(kind, exc.kind)
        except TimeoutError:
            self.stats.record_error(kind, "timeout")
        except aiohttp.ClientConnectorError:
            self.stats.record_error(kind, "connect")
        except (aiohttp.ClientError, OSError) as exc:
            self.stats.record_error(kind, _client_kind(exc))
        finally:
            self.in_flight -= 1

    def _url(self, path_or_url: str) -> URL:
        # encoded=True: the URL is already quoted; yarl would otherwise re-parse every call.
        return URL(urljoin(self.target.base, path_or_url), encoded=True)

    def _lean(self, path_or_url: str) -> tuple[Pool, str] | None:
        """The lean client's pool and request path for a URL, or None to use aiohttp."""
        if self.pools is None:
            return None
        if path_or_url.startswith("/") and not path_or_url.startswith("//"):
            # The common case, a path on the target: no URL parsing per request.
            if self._base_origin is None:
                return None
            return self.pools.get(self._base_origin), path_or_url
        split = split_url(urljoin(self.target.base, path_or_url))
        return None if split is None else (self.pools.get(split[0]), split[1])

    async def _fetch(
        self, method: str, path_or_url: str, body: bytes = b""
    ) -> tuple[int, bytes]:
        """``(status, body)`` of one simple request, on the lean client where it applies."""
        lean = self._lean(path_or_url)
        if lean is not None:
            pool, path = lean
            response = await pool.request(pool.build(method, path, body), self.timeout_s)
            return response.status, response.body
        url = self._url(path_or_url)
        headers = _JSON if method == "POST" else None
        async with self.session.request(method, url, data=body or None, headers=headers) as resp:
            return resp.status, await resp.read()

    async def _get(self, cls: str, path_or_url: str, intended: float) -> None:
        status, _ = await self._fetch("GET", path_or_url)
        self.stats.responded += 1
        if status != 200:
            raise RequestFailed(f"http_{status}")
        self._ok(cls, intended)

    async def _generate(self, query: str, intended: float) -> None:
        status, body = await self._fetch("POST", "/v1/generate", orjson.dumps({"query": query}))
        self.stats.responded += 1
        if status not in (200, 202):
            raise RequestFailed(f"http_{status}")
        answer = _json_object(body)
        if status == 200 and answer.get("cached") is True:
            self._ok("generate_cached", intended)
            return
        self._ok("generate_new", intended)
        stream_url = answer.get("stream_url")
        if status == 202 and self.target.follow_streams:
            if not isinstance(stream_url, str):
                raise RequestFailed("bad_response")
            await self._follow_stream(stream_url, intended)

    async def _follow_stream(self, stream_url: str, intended: float) -> None:
        """Reads the SSE stream: the first ``event: token`` and the final ``event: done``."""
        try:
            async with asyncio.timeout(self.target.stream_timeout_s):
                await self._read_stream(self._url(stream_url), intended)
        except RequestFailed as exc:
            self.stats.record_error("stream_done", exc.kind)
        except TimeoutError:
            self.stats.record_error("stream_done", "stream_timeout")

    async def _read_stream(self, url: URL, intended: float) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=self.target.stream_timeout_s)
        async with self.session.get(url, timeout=timeout) as resp:
            if resp.status != 200:
                raise RequestFailed(f"stream_http_{resp.status}")
            first = True
            async for event in read_events(resp.content):
                if event.event == "token" and first:
                    first = False
                    self._ok("stream_first_token", intended)
                elif event.event == "done":
                    self._ok("stream_done", intended)
                    return
                elif event.event == "error":
                    raise RequestFailed("stream_error")
        raise RequestFailed("stream_incomplete")


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestFailed("bad_response") from None
    if not isinstance(answer, dict):
        raise RequestFailed("bad_response")
    return answer


def _client_kind(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "disconnected"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "bad_payload"
    return "connection"
