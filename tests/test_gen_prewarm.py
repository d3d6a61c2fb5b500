"""``typeahead prewarm``: the top informational queries of a log end up cached."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson
import pytest

from tests.gen_support import DOCS
from tests.redis_server import RedisServer
from typeahead.generation.cache import get_summary
from typeahead.generation.extractive import load_embedder
from typeahead.generation.llm import make_backend
from typeahead.generation.prewarm import question_rule, run, top_queries
from typeahead.generation.prompt import PROMPT_VERSION
from typeahead.generation.queue import connect, job_id
from typeahead.settings import Settings


def test_top_queries_counts_normalised_forms_and_keeps_questions() -> None:
    rows = [("What is the Rhine", 1.0), ("what is the  rhine", 2.0), ("facebook", 10.0),
            ("how big is paris", 2.0), ("oxygen?", 1.0)]
    top = top_queries(rows, 2, question_rule, min_count=1)
    assert top == [("What is the Rhine", 3.0), ("how big is paris", 2.0)]
    assert question_rule("oxygen?") and not question_rule("facebook login")


async def test_prewarm_fills_the_cache(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = tmp_path / "log.tsv"
    log.write_text("query\tcount\nwhat is the capital of france\t5\nfacebook\t9\n"
                   "where does the rhine flow\t3\nwhat is oxygen\t1\n")
    docs = tmp_path / "docs.jsonl"
    docs.write_bytes(b"\n".join(orjson.dumps({"id": d.id, "title": d.title, "text": d.text})
                                for d in DOCS))
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.delenv("TYPEAHEAD_LLM_URL", raising=False)
    args = argparse.Namespace(log=log, top=2, text_col="query", weight_col="count", index=None,
                              docs=docs, timeout=30.0, min_count=3.0)
    assert await run(args) == 0
    model_id = make_backend(Settings.from_env(environ={}), load_embedder()).model_id
    redis = connect(redis_server.url)
    for query, cached in (("what is the capital of france", True),
                          ("where does the rhine flow", True), ("what is oxygen", False)):
        result = await get_summary(redis, job_id(query, PROMPT_VERSION, model_id))
        assert (result is not None) == cached, query
    await redis.aclose()
