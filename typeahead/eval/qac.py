"""``typeahead eval``: offline quality of each tier.

``eval qac`` measures query auto-completion the way the data README's baseline does: for every
logged query and prefix length L (only queries longer than L characters count at L), where does
the query rank among the top k suggestions for its first L characters? MRR and success are
weighted by the query's count in the log.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from typeahead.corpus import FORMATS, read_rows
from typeahead.errors import ConfigError, DataError
from typeahead.eval.intent import add_intent_parser
from typeahead.eval.retrieval import add_retrieval_parser
from typeahead.normalize import normalize
from typeahead.numbers import int_arg, parse_int
from typeahead.suggest import LexicalEngine, load_index

Suggest = Callable[[str, int], list[str]]


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="evaluate quality offline", description="Evaluate quality.")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    add_qac_parser(kinds)
    add_retrieval_parser(kinds)
    add_intent_parser(kinds)


def add_qac_parser(kinds: Any) -> None:
    p = kinds.add_parser("qac", help="query auto-completion MRR/success per prefix length")
    p.add_argument("--index", type=Path, required=True)
    p.add_argument("--log", type=Path, required=True, help="query log (TSV/CSV/JSONL, .gz ok)")
    p.add_argument("--text-col", required=True)
    p.add_argument("--weight-col", default=None, help="count column (default: 1 per row)")
    p.add_argument("--format", choices=FORMATS, default=None)
    p.add_argument("--prefix-lengths", default="2,4,6", type=_lengths)
    p.add_argument("--k", type=int_arg(), default=10)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_qac)


def _lengths(raw: str) -> list[int]:
    try:
        values = sorted({parse_int(x.strip()) for x in raw.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {raw!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("prefix lengths must be integers >= 1")
    return values


@dataclass
class QacResult:
    lengths: list[int]
    weight: dict[int, float] = field(default_factory=dict)
    rr: dict[int, float] = field(default_factory=dict)
    hits: dict[int, float] = field(default_factory=dict)
    queries: int = 0

    def add(self, length: int, weight: float, rank: int | None) -> None:
        self.weight[length] = self.weight.get(length, 0.0) + weight
        if rank is not None:
            self.rr[length] = self.rr.get(length, 0.0) + weight / rank
            self.hits[length] = self.hits.get(length, 0.0) + weight

    def as_json(self) -> dict[str, Any]:
        def ratio(num: dict[int, float], n: int) -> float:
            w = self.weight.get(n, 0.0)
            return round(num.get(n, 0.0) / w, 6) if w else 0.0

        return {
            "n": self.queries,
            "mrr": {str(n): ratio(self.rr, n) for n in self.lengths},
            "success": {str(n): ratio(self.hits, n) for n in self.lengths},
            "weight": {str(n): self.weight.get(n, 0.0) for n in self.lengths},
        }


def evaluate_qac(log: Iterable[tuple[str, float]], suggest: Suggest, lengths: list[int],
                 k: int) -> QacResult:
    """``log`` yields (query, weight); ``suggest(prefix, k)`` returns normalised texts."""
    result = QacResult(lengths)
    cache: dict[str, list[str]] = {}
    for text, weight in log:
        query = normalize(text)
        if not query or weight <= 0:
            continue
        result.queries += 1
        for n in lengths:
            if len(query) <= n:
                continue
            prefix = query[:n]
            ranked = cache.get(prefix)
            if ranked is None:
                ranked = cache[prefix] = suggest(prefix, k)
            rank = ranked.index(query) + 1 if query in ranked else None
            result.add(n, weight, rank)
    return result


def engine_suggest(engine: LexicalEngine) -> Suggest:
    def suggest(prefix: str, k: int) -> list[str]:
        return [normalize(s.text) for s in engine.suggest(prefix, k)]

    return suggest


def run_qac(args: argparse.Namespace) -> int:
    if not 1 <= args.k <= 1000:
        raise ConfigError(f"--k must be 1..1000, got {args.k}")
    index = load_index(args.index)
    rows = read_rows(args.log, text_col=args.text_col, weight_col=args.weight_col,
                     fmt=args.format)
    result = evaluate_qac(((r.text, r.weight) for r in rows), engine_suggest(index.lexical),
                          args.prefix_lengths, args.k)
    if result.queries == 0:
        raise DataError(f"{args.log}: no query with a positive weight")
    report = result.as_json()
    if args.json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    else:
        print(f"queries: {report['n']}")
        print(f"{'prefix':>6}  {'MRR@' + str(args.k):>8}  {'success':>8}")
        for n in args.prefix_lengths:
            print(f"{n:>6}  {report['mrr'][str(n)]:>8.4f}  {report['success'][str(n)]:>8.4f}")
    return 0
