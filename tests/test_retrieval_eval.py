from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import pytest

from tests.student_fixtures import tiny_student
from typeahead.errors import DataError
from typeahead.eval.retrieval import add_retrieval_parser, evaluate, load_queries, score_rankings
from typeahead.retrieval.documents import build_docs_index


def test_hand_computed_recall_and_mrr() -> None:
    rankings = [["a", "b", "c"], ["x", "y", "g"], ["p", "q", "r"], ["m", "n", "o"]]
    golds = [["a"], ["g"], ["zz"], ["n", "zz"]]
    # recall@3: 1 + 1 + 0 + 1/2 = 2.5 / 4; mrr: 1 + 1/3 + 0 + 1/2 = 1.8333 / 4
    result = score_rankings(rankings, golds, k=3)
    assert result["recall"] == pytest.approx(2.5 / 4)
    assert result["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 4)
    assert result["n"] == 4 and result["k"] == 3
    # at k=2 the third query's gold "g" (rank 3) no longer counts
    assert score_rankings(rankings, golds, k=2)["recall"] == pytest.approx(1.5 / 4)


def test_evaluate_calls_search_with_k() -> None:
    seen: list[int] = []

    def search(text: str, k: int) -> list[str]:
        seen.append(k)
        return [text.upper(), text]

    result = evaluate(search, [("a", ["a"]), ("b", ["B"])], k=5)
    assert seen == [5, 5]
    assert result["recall"] == 1.0 and result["mrr"] == pytest.approx((0.5 + 1.0) / 2)


def test_load_queries_splits_gold_and_checks_columns(tmp_path: Path) -> None:
    path = tmp_path / "q.tsv"
    path.write_text("q\tgold\nfirst\ta|b\nsecond\t\n")
    assert load_queries(path, "q", "gold") == [("first", ["a", "b"])]
    with pytest.raises(DataError, match="lacks column"):
        load_queries(path, "question", "gold")


def test_cli_on_a_fixture_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    student = tiny_student(tmp_path / "student", dim=16)
    docs = tmp_path / "docs.jsonl.gz"
    with gzip.open(docs, "wt") as fh:
        for i, text in enumerate(["cheap flights paris", "the river rhine", "oxygen element"]):
            fh.write(json.dumps({"id": f"d{i}", "title": "", "text": text}) + "\n")
    build_docs_index(docs, tmp_path / "idx" / "docs", student)
    queries = tmp_path / "q.jsonl"
    queries.write_text(
        '{"question": "flights to paris", "pid": "d0"}\n{"question": "rhine", "pid": "d1"}\n'
        '{"question": "zzz unknown", "pid": "d2"}\n'
    )
    parser = argparse.ArgumentParser()
    add_retrieval_parser(parser.add_subparsers())
    args = parser.parse_args(
        [
            "retrieval",
            "--index",
            str(tmp_path / "idx"),
            "--queries",
            str(queries),
            "--text-col",
            "question",
            "--gold-col",
            "pid",
            "--k",
            "1",
            "--mode",
            "lexical",
            "--json",
            "--student",
            str(tmp_path / "student"),
        ]
    )
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert (
        out["n"] == 3
        and out["recall"] == pytest.approx(2 / 3)
        and out["mrr"] == pytest.approx(2 / 3)
    )
