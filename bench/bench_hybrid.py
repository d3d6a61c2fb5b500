"""Hybrid suggestions: does adding semantic neighbours help, and never hurt, QAC?

Builds an index on AOL rows 1-800k (weights ``count_rows_1_800000``, every query kept, for
evaluation only) with entry vectors, then evaluates on rows 800k+ (weights
``count_rows_800001_999999``):

- MRR@10 and success@10 at prefix lengths 2/4/6, lexical alone vs hybrid, for each setting of
  the similarity floor and the semantic score scale (the tuning grid);
- coverage (share of inputs whose intended query is among the 10 suggestions) on inputs with a
  typo in the last word and on inputs with the first two words swapped.

    python bench/bench_hybrid.py [--sample 20000] [--student DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import AOL, ROOT, print_table
from typeahead.corpus import read_rows
from typeahead.eval.qac import evaluate_qac
from typeahead.normalize import normalize
from typeahead.suggest.index import BuildOptions, LoadedIndex, build_index, load_index
from typeahead.suggest.service import SuggestService

LENGTHS = [2, 4, 6]


def held_out(sample: int, seed: int = 1) -> list[tuple[str, float]]:
    rows = [(normalize(r.text), r.weight) for r in read_rows(
        AOL, text_col="query", weight_col="count_rows_800001_999999") if r.weight > 0]
    random.Random(seed).shuffle(rows)
    return rows[:sample]


def ensure_index(student: Path | None) -> LoadedIndex:
    out = ROOT / "indexes" / "aol-train-vectors"
    if not (out / "manifest.json").exists():
        rows = read_rows(AOL, text_col="query", weight_col="count_rows_1_800000")
        build_index(rows, out, BuildOptions("query", "count_rows_1_800000", 1, vectors=True,
                                            student_dir=student), AOL)
    return load_index(out, verify=False, student_dir=student)


def service_suggest(service: SuggestService) -> Callable[[str, int], list[str]]:
    def suggest(prefix: str, k: int) -> list[str]:
        return [normalize(s["text"]) for s in service.suggest(prefix, k)["suggestions"]]

    return suggest


def variants(queries: list[tuple[str, float]], seed: int = 2) -> dict[str, list[tuple[str, str]]]:
    rng = random.Random(seed)
    typo, swapped = [], []
    for q, _ in queries:
        words = q.split()
        last = words[-1] if words else ""
        if len(last) >= 5:
            i = rng.randrange(1, len(last) - 1)
            bad = last[:i] + last[i + 1] + last[i] + last[i + 2:]
            typo.append((" ".join([*words[:-1], bad]), q))
        if len(words) >= 2:
            swapped.append((" ".join([words[1], words[0], *words[2:]]), q))
    return {"typo in last word": typo, "first two words swapped": swapped}


def coverage(suggest: Callable[[str, int], list[str]], pairs: list[tuple[str, str]]) -> float:
    hits = sum(1 for typed, wanted in pairs if wanted in suggest(typed, 10))
    return hits / len(pairs) if pairs else 0.0


def semantic_share(service: SuggestService, queries: list[tuple[str, float]]) -> float:
    """Share of shown suggestions (4-character prefixes) that come from the semantic layer."""
    total = semantic = 0
    for q, _ in queries[:2000]:
        for s in service.suggest(q[:4], 10)["suggestions"]:
            total += 1
            semantic += s["source"] == "semantic"
    return semantic / total if total else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sample", type=int, default=20_000)
    ap.add_argument("--student", type=Path, default=None)
    ap.add_argument("--floors", default="0.5,0.6,0.7,0.75,0.8,0.85,0.9",
                    help="cosine floors to compare with lexical alone")
    args = ap.parse_args()
    index = ensure_index(args.student)
    assert index.semantic is not None, "index has no vectors"
    queries = held_out(args.sample)
    pairs = variants(queries)
    base = SuggestService(index=index, semantic=False, results_k=0)
    configs: list[tuple[str, SuggestService]] = [("lexical", base)]
    for floor in (float(f) for f in args.floors.split(",")):
        layer = dataclasses.replace(index.semantic, min_similarity=floor)
        idx = dataclasses.replace(index, semantic=layer)
        configs.append((f"hybrid, cosine >= {floor}", SuggestService(index=idx, results_k=0)))
    rows = []
    for name, service in configs:
        fn = service_suggest(service)
        qac = evaluate_qac(queries, fn, LENGTHS, 10).as_json()
        cov = [coverage(fn, p) for p in pairs.values()]
        shown = semantic_share(service, queries)
        rows.append([name, *[qac["mrr"][str(n)] for n in LENGTHS],
                     *[qac["success"][str(n)] for n in LENGTHS], *cov, shown])
    print_table(
        f"QAC on AOL rows 800k+ ({len(queries):,} queries) and coverage of altered inputs",
        ["ranking", *[f"MRR@10 {n}" for n in LENGTHS], *[f"succ@10 {n}" for n in LENGTHS],
         *[f"cov {name}" for name in pairs], "semantic share"],
        [[r[0], *[f"{v:.4f}" for v in r[1:]]] for r in rows])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
