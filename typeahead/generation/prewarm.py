"""``typeahead prewarm``: generate and cache summaries for a log's most frequent questions.

It counts the log's queries (by their normalised form), keeps the informational ones (the
intent classifier when its model is installed, else a question-word rule), and submits the top
N through the ordinary job queue, so single-flight and the cache behave as for users. It runs
an in-process worker while it waits, so it finishes even when no other worker is running;
other workers help when they are.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from typeahead.corpus import read_rows
from typeahead.errors import ConfigError, ServiceUnavailable
from typeahead.generation.extractive import load_embedder
from typeahead.generation.grounding import load_retriever
from typeahead.generation.llm import make_backend
from typeahead.generation.prompt import PROMPT_VERSION
from typeahead.generation.queue import REDIS_DOWN, Jobs, job_id, layout_for, open_redis
from typeahead.generation.worker import Worker, semantic_cache
from typeahead.normalize import normalize
from typeahead.numbers import float_arg, int_arg
from typeahead.settings import Settings

log = logging.getLogger("typeahead.prewarm")

QUESTION_WORDS = frozenset((
    "what", "who", "whom", "whose", "when", "where", "why", "how", "which", "is", "are", "was",
    "were", "does", "do", "did", "can", "could", "should", "define", "definition", "meaning",
    "explain", "history",
))


def question_rule(text: str) -> bool:
    """The fallback intent rule: a question word first, or a question mark."""
    words = normalize(text).split()
    return bool(words) and (words[0] in QUESTION_WORDS or text.rstrip().endswith("?"))


def informational_filter() -> Callable[[str], bool]:
    """The intent classifier when its model loads; else the question-word rule."""
    try:
        from typeahead.intent import IntentClassifier

        classifier = IntentClassifier.load(None)
    except Exception as exc:
        log.warning("intent classifier unavailable (%s); using the question-word rule", exc)
        return question_rule
    return lambda text: classifier.predict(text).label == "informational"


def top_queries(
    rows: Iterable[tuple[str, float]], n: int, keep: Callable[[str], bool], *,
    min_count: float = 3.0,
) -> list[tuple[str, float]]:
    """The n heaviest informational queries, counted by normalised form, shown as first seen.

    Queries whose merged count is below ``min_count`` (the privacy floor) are never chosen:
    a pre-warmed summary would reveal them to the next user who types them."""
    weights: dict[str, float] = {}
    shown: dict[str, str] = {}
    for text, weight in rows:
        key = normalize(text)
        if key:
            weights[key] = weights.get(key, 0.0) + weight
            shown.setdefault(key, " ".join(text.split()))
    out: list[tuple[str, float]] = []
    for key, weight in sorted(weights.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(out) >= n or weight < min_count:
            break
        if keep(shown[key]):
            out.append((shown[key], weight))
    return out


def add_parser(subparsers: Any, name: str) -> None:
    p = subparsers.add_parser(name, help="pre-generate summaries for a log's top questions")
    p.add_argument("--log", type=Path, required=True, help="query log (TSV/CSV/JSONL, .gz ok)")
    p.add_argument("--top", type=int_arg(), required=True, help="how many queries to pre-warm")
    p.add_argument("--text-col", default="query", help="column with the query text")
    p.add_argument("--weight-col", help="column with a count per row (default: 1 per row)")
    p.add_argument("--index", type=Path, help="index directory (grounding documents)")
    p.add_argument("--docs", type=Path, help="grounding documents as JSON lines")
    p.add_argument("--timeout", type=float_arg(minimum=0.0), default=600.0,
                   help="seconds to wait in all")
    p.add_argument("--min-count", type=float_arg(minimum=0.0), default=3.0,
                   help="privacy floor: never pre-warm a query counted fewer times (default 3)")
    p.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise ConfigError("--top must be >= 1")
    settings = Settings.from_env(index_dir=args.index)
    if not settings.uses_redis:
        raise ConfigError("prewarm needs REDIS_URL or REDIS_SENTINELS (the cache it fills)")
    rows = ((r.text, r.weight) for r in read_rows(args.log, text_col=args.text_col,
                                                   weight_col=args.weight_col))
    queries = top_queries(rows, args.top, informational_filter(), min_count=args.min_count)
    print(f"prewarm: {len(queries)} informational queries selected", file=sys.stderr)
    embedder = load_embedder()
    backend = make_backend(settings, embedder)
    redis = open_redis(settings, read_timeout_s=5.0)
    jobs = Jobs(redis, layout=layout_for(settings))
    worker = Worker(jobs, backend, load_retriever(settings.index_dir, args.docs, embedder),
                    settings, name="prewarm",
                    semantic=semantic_cache(settings, redis, embedder, backend.model_id))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        ids = {job_id(q, PROMPT_VERSION, backend.model_id): q for q, _ in queries}
        try:
            for job, query in ids.items():
                # Pinned: nobody streams a pre-warm job, and it must not be cancelled for it.
                await jobs.submit(job, query, deadline_s=settings.job_deadline_s,
                                  max_depth=settings.queue_max_depth, pin=True)
        except REDIS_DOWN as exc:
            raise ServiceUnavailable(f"cannot reach Redis: {exc}") from exc
        outcome = await _wait(jobs, list(ids), time.monotonic() + args.timeout)
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await backend.close()
        await redis.aclose()
    counts = Counter(outcome.values())
    print(f"prewarm: done={counts['done']} failed={counts['failed']} "
          f"unfinished={counts['unfinished']}")
    return 0 if counts["done"] == len(ids) else 1


async def _wait(jobs: Jobs, ids: list[str], deadline: float) -> dict[str, str]:
    status: dict[str, str] = {}
    while time.monotonic() < deadline:
        for job in ids:
            if status.get(job) not in ("done", "failed"):
                status[job] = (await jobs.record(job)).get("status", "unfinished")
        finished = sum(status[j] in ("done", "failed") for j in ids)
        print(f"\rprewarm: {finished}/{len(ids)}", end="", file=sys.stderr)
        if finished == len(ids):
            break
        await asyncio.sleep(0.2)
    print(file=sys.stderr)
    return {j: s if s in ("done", "failed") else "unfinished" for j, s in status.items()}
