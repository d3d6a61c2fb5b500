"""The summary cache on Redis: exact (by job id) and, optionally, semantic (by query vector).

Values are JSON (orjson), never pickle, under the versioned keys of ``typeahead.keys``. The
exact cache is written by the worker in the same atomic step that marks a job done (see
``typeahead.generation.queue``); this module reads it. The semantic cache maps a paraphrase to a
cached
answer when the student embeddings of the two queries have cosine similarity at or above a
threshold. Its precision is measured in ``bench/bench_generate.py``; it is off by default.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson
import redis.asyncio as aioredis

from typeahead import keys
from typeahead.embed import Embedder


def encode_result(
    job_id: str, query: str, summary: str, sources: Sequence[dict[str, Any]], model: str,
    prompt_version: str,
) -> bytes:
    return orjson.dumps({
        "id": job_id, "query": query, "summary": summary, "sources": list(sources),
        "model": model, "prompt_version": prompt_version, "created": time.time(),
    })


def decode_result(raw: bytes | str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None  # a corrupt entry is a miss, never a 500
    return value if isinstance(value, dict) else None


async def get_summary(redis: aioredis.Redis, job_id: str,
                      layout: keys.Layout = keys.PLAIN) -> dict[str, Any] | None:
    return decode_result(await redis.get(layout.summary(job_id)))


class HotSummaries:
    """Cached summaries this process served lately, in its memory: a popular question asked
    again is answered without a Redis round trip. At 500 cached POSTs a second on 2 cores
    (bench/bench_generate.py) that gave p50 0.9-1.2 ms instead of 1.3-2.3, and p99 2.4-2.9 ms
    in four runs of five instead of 3.5-11.4 ms in all five.

    A summary never changes under its job id, which hashes the query, the prompt version and
    the model, so an entry can only be stale by having expired or been deleted in Redis
    meanwhile: ``ttl_s`` bounds that. Least recently used entries go beyond ``size``. Entries
    are the decoded result dicts, which the handler only reads. While Redis is down, what is
    here is still served: a stored answer needs no Redis."""

    def __init__(self, size: int, ttl_s: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size if ttl_s > 0 else 0
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def get(self, job_id: str) -> dict[str, Any] | None:
        entry = self._entries.get(job_id)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[job_id]
            return None
        self._entries.move_to_end(job_id)
        return entry[1]

    def put(self, job_id: str, result: dict[str, Any]) -> None:
        if self.size <= 0:
            return
        self._entries[job_id] = (self._clock() + self.ttl_s, result)
        self._entries.move_to_end(job_id)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class SemanticCache:
    """Nearest cached query by cosine; a local mirror of the vectors is refreshed incrementally.

    Every API process keeps the vectors in memory (at most ``keys.SEMANTIC_MAX_ENTRIES``), and
    fetches only those added since its last refresh, at most once per ``refresh_s``.
    """

    def __init__(
        self, redis: aioredis.Redis, embedder: Embedder, model_key: str, threshold: float,
        *, refresh_s: float = 1.0, layout: keys.Layout = keys.PLAIN,
    ) -> None:
        self.redis = redis
        self.embedder = embedder
        # One hash tag for both keys on a cluster: add() changes them in one MULTI/EXEC.
        self.vec_key = layout.semantic_vectors(model_key)
        self.ord_key = layout.semantic_order(model_key)
        self.threshold = threshold
        self.refresh_s = refresh_s
        self._vectors: dict[str, np.ndarray] = {}
        self._ids: list[str] = []
        self._matrix: np.ndarray | None = None
        self._since = 0.0
        self._checked = 0.0

    async def add(self, job_id: str, query: str) -> None:
        vec = self.embedder.encode([query])[0].astype(np.float32)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.vec_key, job_id, vec.tobytes())
            pipe.zadd(self.ord_key, {job_id: time.time()})
            await pipe.execute()
        await self._trim()

    async def _trim(self) -> None:
        excess = await self.redis.zcard(self.ord_key) - keys.SEMANTIC_MAX_ENTRIES
        if excess > 0:
            old = await self.redis.zrange(self.ord_key, 0, excess - 1)
            if old:
                await self.redis.hdel(self.vec_key, *old)
                await self.redis.zrem(self.ord_key, *old)

    async def lookup(self, query: str) -> tuple[str, float] | None:
        """(job id, similarity) of the nearest cached query at or above the threshold."""
        await self._refresh()
        if self._matrix is None or not self._ids:
            return None
        vec = self.embedder.encode([query])[0].astype(np.float32)
        sims = self._matrix @ vec
        best = int(np.argmax(sims))
        if float(sims[best]) < self.threshold:
            return None
        return self._ids[best], float(sims[best])

    def forget(self, job_id: str) -> None:
        if self._vectors.pop(job_id, None) is not None:
            self._rebuild()

    async def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.refresh_s:
            return
        self._checked = now
        fresh: Any = await self.redis.zrangebyscore(
            self.ord_key, self._since, "+inf", withscores=True,
        )
        new_ids = [m.decode() if isinstance(m, bytes) else m for m, _ in fresh]
        if not new_ids:
            return
        self._since = max(score for _, score in fresh)
        raw: Any = await self.redis.hmget(self.vec_key, new_ids)
        for job_id, blob in zip(new_ids, raw, strict=True):
            if blob is not None:
                self._vectors[job_id] = np.frombuffer(blob, dtype=np.float32)
        self._rebuild()

    def _rebuild(self) -> None:
        self._ids = list(self._vectors)
        self._matrix = np.stack([self._vectors[i] for i in self._ids]) if self._ids else None
