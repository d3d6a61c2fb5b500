"""Query auto-completion quality: most-popular completion (MPC), the lexical tiers alone (the
previous release's ranking) and the whole keystroke tier as ``/v1/suggest`` serves it (lexical
tiers, generated completions, semantic neighbours, the suggestion policy), in the fixed tier
order and in the completion ranker's.

Tables (MRR@10 and success@10 at 2 / 4 / 6 characters, weighted by count; targets held by the
index ("seen") and not ("unseen") apart):

- AOL held-out: indexes built on rows 1-800,000, served (count >= 3) and full (count >= 1)
  dictionaries; targets rows 800,001+ (users disjoint from the training rows).
- TREC Million Query 2007-09 queries as targets (weight 1 each), the served AOL index.
- Books: goodbooks-10k titles weighted by ratings_count; a few whole-answer checks.

None of these figures chose anything: choices were made on a dev split carved from the
training rows (see docs/suggest.md).

With ``--lm FILE`` (``typeahead train-lm`` on rows 1-800,000), the served tables also show the
service with the character language model generator in place of the n-gram one.

    python bench/bench_qac.py [--quick] [--json FILE] [--lm FILE]
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import AOL, SHARED, print_table
from typeahead.corpus import read_rows
from typeahead.eval.qac import evaluate_qac, qac_suggest, served_keys
from typeahead.normalize import normalize
from typeahead.suggest.index import BuildOptions, build_index

TREC = SHARED / "qac_eval" / "trec_mq_2007_2009_queries.tsv.gz"
BOOKS = SHARED / "typeahead" / "goodbooks10k_titles.tsv.gz"
LENGTHS = [2, 4, 6]
K = 10
TRAIN, HELD_OUT = "count_rows_1_800000", "count_rows_800001_999999"
# (typed, what the first suggestion should be, or (None, text): in the top ten)
BOOK_CHECKS = [
    ("hunger", "The Hunger Games (The Hunger Games, #1)", True),
    ("sorcerers stone", "Harry Potter and the Sorcerer's Stone (Harry Potter, #1)", False),
    ("harry potter and the s", "Harry Potter and the Sorcerer's Stone (Harry Potter, #1)", False),
    ("to kill", "To Kill a Mockingbird", True),
]
Suggest = Callable[[str, int], list[str]]


def build(corpus: Path, out: Path, text_col: str, weight_col: str, min_count: float,
          vectors: bool, titles: bool = False) -> Path:
    options = BuildOptions(text_col, weight_col, min_count, vectors=vectors,
                           fold_punctuation=titles, leading_articles=titles)
    build_index(read_rows(corpus, text_col=text_col, weight_col=weight_col), out, options,
                corpus, progress=None)
    return out


def mpc(corpus: Path, weight_col: str, min_count: float) -> Suggest:
    """Most-popular completion over the training counts: no tiers, no policy."""
    counts: dict[str, float] = {}
    for row in read_rows(corpus, text_col="query", weight_col=weight_col):
        key = normalize(row.text)
        if key:
            counts[key] = counts.get(key, 0.0) + row.weight
    keys = sorted(k for k, c in counts.items() if c >= min_count)

    def suggest(prefix: str, k: int) -> list[str]:
        lo = bisect.bisect_left(keys, prefix)
        hi = bisect.bisect_left(keys, prefix + "\U0010ffff", lo)
        return heapq.nlargest(k, keys[lo:hi], key=lambda key: (counts[key], key))

    return suggest


def score(log: list[tuple[str, float]], suggest: Suggest, seen: frozenset[str] | None = None
          ) -> dict[str, Any]:
    return evaluate_qac(log, suggest, LENGTHS, K, seen).as_json()


def table_rows(name: str, results: dict[str, dict[str, Any]]) -> list[list[object]]:
    base = results["MPC"]["mrr"]
    rows = []
    for system, res in results.items():
        mrr = res["mrr"]
        cells: list[object] = [name, system]
        cells += [f"{mrr[str(n)]:.4f} ({mrr[str(n)] / base[str(n)]:.3f}x)" if base[str(n)]
                  else f"{mrr[str(n)]:.4f}" for n in LENGTHS]
        cells += [f"{res['success'][str(n)]:.4f}" for n in LENGTHS]
        unseen = res.get("unseen")
        cells.append(" / ".join(f"{unseen['mrr'][str(n)]:.4f}" for n in LENGTHS)
                     if unseen else "-")
        rows.append(cells)
    return rows


def aol_tables(tmp: Path, quick: bool, lm: Path | None = None
               ) -> dict[str, dict[str, dict[str, Any]]]:
    log = [(r.text, r.weight) for r in read_rows(AOL, text_col="query", weight_col=HELD_OUT)
           if r.weight > 0]
    trec = [(r.text, 1.0) for r in read_rows(TREC, text_col="query")]
    if quick:
        log, trec = log[::10], trec[::10]
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, floor, vectors in (("served (count >= 3)", 3.0, True),
                                 ("full (count >= 1)", 1.0, False)):
        index_dir = build(AOL, tmp / f"aol-{floor:g}", "query", TRAIN, floor, vectors)
        targets = [("AOL held-out", log)] + ([("TREC MQ", trec)] if floor == 3.0 else [])
        lexical, index = qac_suggest(index_dir, "lexical")
        fixed, _ = qac_suggest(index_dir, "service", ranker=False)
        service, _ = qac_suggest(index_dir, "service", ranker=True)
        char_lm = qac_suggest(index_dir, "service", ranker=False, lm=lm)[0] \
            if lm and floor == 3.0 else None
        seen = served_keys(index)
        top = mpc(AOL, TRAIN, floor)
        for target, rows in targets:
            out[f"{target}, {name}"] = {
                "MPC": score(rows, top),
                "previous release (lexical tiers)": score(rows, lexical, seen),
                "service, fixed order (+ generated)": score(rows, fixed, seen),
                "service (+ generated, ranked)": score(rows, service, seen),
            }
            if char_lm is not None:
                out[f"{target}, {name}"]["service, fixed order (+ character LM generated)"] = \
                    score(rows, char_lm, seen)
    return out


def books(tmp: Path) -> list[list[object]]:
    """Each check on plain keys (the previous release) and with --fold-punctuation
    --leading-articles."""
    ranks: dict[bool, list[int | None]] = {}
    for titles in (False, True):
        index_dir = build(BOOKS, tmp / f"books-{titles}", "title", "ratings_count", 1.0, True,
                          titles)
        service, _ = qac_suggest(index_dir, "service")
        ranks[titles] = [_rank(service(typed, K), want) for typed, want, _ in BOOK_CHECKS]
    rows: list[list[object]] = []
    for i, (typed, want, first) in enumerate(BOOK_CHECKS):
        rank = ranks[True][i]
        ok = rank == 1 if first else rank is not None
        rows.append([typed, want, "first" if first else "top 10", ranks[False][i] or "-",
                     rank or "-", "met" if ok else "MISSED"])
    return rows


def _rank(got: list[str], want: str) -> int | None:
    key = normalize(want)
    return got.index(key) + 1 if key in got else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the targets")
    ap.add_argument("--books-only", action="store_true", help="only the books checks")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--lm", type=Path, default=None,
                    help="a character language model (typeahead train-lm) to compare")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-qac-") as raw:
        tmp = Path(raw)
        tables = {} if args.books_only else aol_tables(tmp, args.quick, args.lm)
        book_rows = books(tmp)
    header = ["targets, dictionary", "system", *(f"MRR@{K} L={n}" for n in LENGTHS),
              *(f"success L={n}" for n in LENGTHS), "unseen MRR 2/4/6"]
    for name, results in tables.items():
        print_table(name, header, table_rows(name.split(",")[0], results))
    print_table("Books (goodbooks-10k titles by ratings_count), service",
                ["typed", "expected", "where", "rank, plain keys", "rank, title keys",
                 "verdict"], book_rows)
    if args.json:
        args.json.write_bytes(orjson.dumps({"aol": tables, "books": book_rows},
                                           option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
