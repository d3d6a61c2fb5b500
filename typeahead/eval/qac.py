"""``typeahead eval``: offline quality of each tier.

``eval qac`` measures query auto-completion the way the data README's baseline does: for every
logged query and prefix length L (only queries longer than L characters count at L), where does
the query rank among the top k suggestions for its first L characters? MRR and success are
weighted by the query's count in the log.

``--mode lexical`` asks the lexical engine alone; ``--mode service`` asks the whole keystroke
tier as ``GET /v1/suggest`` serves it (lexical tiers, generated completions, semantic
neighbours, the suggestion policy). Targets are also scored apart by whether the index holds
them (``seen``) or not (``unseen``): only generation can reach an unseen one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from typeahead.corpus import add_column_arguments, read_rows
from typeahead.errors import ConfigError, DataError
from typeahead.eval.intent import add_intent_parser
from typeahead.eval.retrieval import add_retrieval_parser
from typeahead.normalize import normalize
from typeahead.numbers import int_arg, parse_int
from typeahead.safety.policy import SuggestionPolicy
from typeahead.suggest import LexicalEngine, LoadedIndex, load_index
from typeahead.suggest.charlm import with_char_lm
from typeahead.suggest.ranker import ranker_for
from typeahead.suggest.service import SuggestService

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
    add_column_arguments(p, "count column (default: 1 per row)")
    p.add_argument("--prefix-lengths", default="2,4,6", type=_lengths)
    p.add_argument("--k", type=int_arg(), default=10)
    p.add_argument("--mode", choices=("lexical", "service"), default="lexical",
                   help="lexical: the lexical engine alone; service: every tier as "
                        "/v1/suggest serves them (default: lexical)")
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
    groups: dict[str, QacResult] = field(default_factory=dict)

    def add(self, length: int, weight: float, rank: int | None, group: str | None = None
            ) -> None:
        self.weight[length] = self.weight.get(length, 0.0) + weight
        if rank is not None:
            self.rr[length] = self.rr.get(length, 0.0) + weight / rank
            self.hits[length] = self.hits.get(length, 0.0) + weight
        if group is not None:
            part = self.groups.get(group)
            if part is None:
                part = self.groups[group] = QacResult(self.lengths)
            part.add(length, weight, rank)

    def as_json(self) -> dict[str, Any]:
        def ratio(num: dict[int, float], n: int) -> float:
            w = self.weight.get(n, 0.0)
            return round(num.get(n, 0.0) / w, 6) if w else 0.0

        out: dict[str, Any] = {
            "n": self.queries,
            "mrr": {str(n): ratio(self.rr, n) for n in self.lengths},
            "success": {str(n): ratio(self.hits, n) for n in self.lengths},
            "weight": {str(n): self.weight.get(n, 0.0) for n in self.lengths},
        }
        for name in sorted(self.groups):
            part = self.groups[name].as_json()
            del part["n"]
            out[name] = part
        return out


def evaluate_qac(log: Iterable[tuple[str, float]], suggest: Suggest, lengths: list[int],
                 k: int, seen: Container[str] | None = None) -> QacResult:
    """``log`` yields (query, weight); ``suggest(prefix, k)`` returns normalised texts;
    ``seen``: the keys the index holds, to score seen and unseen targets apart."""
    result = QacResult(lengths)
    cache: dict[str, list[str]] = {}
    for text, weight in log:
        query = normalize(text)
        if not query or weight <= 0:
            continue
        result.queries += 1
        group = None if seen is None else ("seen" if query in seen else "unseen")
        for n in lengths:
            if len(query) <= n:
                continue
            prefix = query[:n]
            ranked = cache.get(prefix)
            if ranked is None:
                ranked = cache[prefix] = suggest(prefix, k)
            rank = ranked.index(query) + 1 if query in ranked else None
            result.add(n, weight, rank, group)
    return result


def engine_suggest(engine: LexicalEngine) -> Suggest:
    def suggest(prefix: str, k: int) -> list[str]:
        return [normalize(s.text) for s in engine.suggest(prefix, k)]

    return suggest


def service_suggest(service: SuggestService) -> Suggest:
    def suggest(prefix: str, k: int) -> list[str]:
        return [normalize(s["text"]) for s in service.suggest(prefix, k)["suggestions"]]

    return suggest


def served_keys(index: LoadedIndex) -> frozenset[str]:
    keys = index.lexical.data.keys
    return frozenset(keys.many(list(range(len(keys)))))


def qac_suggest(index_dir: Path, mode: str, ranker: bool | None = None,
                lm: Path | None = None) -> tuple[Suggest, LoadedIndex]:
    """The suggest function ``mode`` names, over the index at ``index_dir``; ``ranker``
    turns the completion ranker on or off (None: as the settings say); ``lm``: complete with
    this character language model (None: as the settings say)."""
    if mode == "lexical":
        index = load_index(index_dir)  # the whole index is checked, as serve would
        return engine_suggest(index.lexical), index
    from typeahead.settings import Settings

    settings = Settings.from_env()
    index = load_index(index_dir, verify=settings.verify_index, semantic=settings.semantic,
                       student_dir=settings.student_dir)
    index = with_char_lm(index, lm or settings.completion_lm_file)
    # Instant results and intent never change the suggestions: left out, they cost nothing.
    service = SuggestService(index=index, semantic=settings.semantic, results_k=0,
                             policy=SuggestionPolicy.load(settings.safety_allow),
                             ranker=ranker_for(index, settings.completion_ranker
                                               if ranker is None else ranker,
                                               settings.completion_ranker_file))
    return service_suggest(service), index


def run_qac(args: argparse.Namespace) -> int:
    if not 1 <= args.k <= 1000:
        raise ConfigError(f"--k must be 1..1000, got {args.k}")
    suggest, index = qac_suggest(args.index, args.mode)
    rows = read_rows(args.log, text_col=args.text_col, weight_col=args.weight_col,
                     fmt=args.format)
    result = evaluate_qac(((r.text, r.weight) for r in rows), suggest,
                          args.prefix_lengths, args.k, served_keys(index))
    if result.queries == 0:
        raise DataError(f"{args.log}: no query with a positive weight")
    report = result.as_json()
    if args.json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    else:
        _print_report(report, args.prefix_lengths, args.k)
    return 0


def _print_report(report: dict[str, Any], lengths: list[int], k: int) -> None:
    print(f"queries: {report['n']}")
    parts = [("all", report)] + [(g, report[g]) for g in ("seen", "unseen") if g in report]
    header = "  ".join(f"{name + ' MRR@' + str(k):>16}  {name + ' success':>14}"
                       for name, _ in parts)
    print(f"{'prefix':>6}  {header}")
    for n in lengths:
        cells = "  ".join(f"{part['mrr'][str(n)]:>16.4f}  {part['success'][str(n)]:>14.4f}"
                          for _, part in parts)
        print(f"{n:>6}  {cells}")
