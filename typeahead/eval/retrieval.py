"""Instant-result quality: recall@k and MRR@k of gold document ids.

``typeahead eval retrieval --index DIR --queries FILE --text-col C --gold-col G --k 10 --json``
searches the documents index under ``DIR/docs/`` (or ``DIR`` itself when it is one) with each
query and scores the ranked ids against the gold column. A gold cell may hold several ids
separated by ``|``; recall is then the share of them found in the top k.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from typeahead.errors import ConfigError, DataError
from typeahead.numbers import int_arg

__all__ = ["add_retrieval_parser", "evaluate", "run", "score_rankings"]

MODES = ("fused", "semantic", "lexical")


def score_rankings(
    rankings: Sequence[Sequence[str]], golds: Sequence[Sequence[str]], k: int
) -> dict[str, float]:
    """Mean recall@k and MRR@k (reciprocal rank of the first gold id within the top k)."""
    if len(rankings) != len(golds):
        raise ValueError("one ranking per gold list expected")
    recall = mrr = 0.0
    for ranked, gold in zip(rankings, golds, strict=True):
        wanted = set(gold)
        top = list(ranked[:k])
        if wanted:
            recall += len(wanted.intersection(top)) / len(wanted)
        mrr += next((1.0 / (r + 1) for r, doc in enumerate(top) if doc in wanted), 0.0)
    n = max(1, len(golds))
    return {"recall": recall / n, "mrr": mrr / n, "n": len(golds), "k": k}


def evaluate(
    search: Callable[[str, int], Sequence[str]],
    queries: Sequence[tuple[str, Sequence[str]]],
    k: int = 10,
) -> dict[str, float]:
    """Score a ``search(text, k) -> ranked ids`` function on (text, gold ids) pairs."""
    rankings = [search(text, k) for text, _ in queries]
    return score_rankings(rankings, [gold for _, gold in queries], k)


def load_queries(path: Path, text_col: str, gold_col: str) -> list[tuple[str, list[str]]]:
    """(text, gold ids) pairs from a TSV/CSV/JSONL file; rows without text or gold are skipped."""
    from typeahead.corpus import read_records

    out: list[tuple[str, list[str]]] = []
    for line, rec in read_records(path):
        if text_col not in rec or gold_col not in rec:
            raise DataError(f"{path}:{line}: lacks column {text_col!r} or {gold_col!r}")
        text, gold = rec[text_col], rec[gold_col]
        golds = [str(g) for g in gold] if isinstance(gold, list) else str(gold or "").split("|")
        golds = [g for g in golds if g]
        if text and golds:
            out.append((str(text), golds))
    if not out:
        raise DataError(f"{path}: no rows with both {text_col!r} and {gold_col!r}")
    return out


# --- command line ---------------------------------------------------------------------------


def add_retrieval_parser(eval_subparsers: Any) -> argparse.ArgumentParser:
    """Hang ``retrieval`` under ``typeahead eval``."""
    p: argparse.ArgumentParser = eval_subparsers.add_parser(
        "retrieval", help="recall@k and MRR of instant results against gold document ids"
    )
    p.add_argument(
        "--index", type=Path, required=True, help="index directory (documents in DIR/docs)"
    )
    p.add_argument("--queries", type=Path, required=True, help="TSV/CSV/JSONL file of queries")
    p.add_argument("--text-col", required=True, help="column with the query text")
    p.add_argument(
        "--gold-col", required=True, help="column with the gold document id(s), '|'-separated"
    )
    p.add_argument("--k", type=int_arg(), default=10, help="cut-off (default 10)")
    p.add_argument(
        "--mode", choices=MODES, default="fused", help="ranking to score (default fused)"
    )
    p.add_argument(
        "--student", type=Path, default=None, help="student directory (default: packaged)"
    )
    p.add_argument("--limit", type=int_arg(minimum=1), default=None,
                   help="score only the first N queries (N >= 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from typeahead.embed import Student
    from typeahead.retrieval import DocsIndex, docs_dir

    if not 1 <= args.k <= 1000:
        raise ConfigError(f"--k must be 1..1000, got {args.k}")
    queries = load_queries(args.queries, args.text_col, args.gold_col)[: args.limit]
    index = DocsIndex.load(docs_dir(args.index), Student.load(args.student))

    def search(text: str, k: int) -> list[str]:
        return [r.id for r in index.search(text, k, mode=args.mode)]

    result: dict[str, Any] = {**evaluate(search, queries, args.k), "mode": args.mode}
    if args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    else:
        k, recall, mrr = args.k, result["recall"], result["mrr"]
        print(f"recall@{k} {recall:.4f}  mrr@{k} {mrr:.4f}  n {result['n']}")
    return 0
