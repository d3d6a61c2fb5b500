"""Instant-result quality on SQuAD: question -> paragraph, recall@10 and MRR@10.

    .venv/bin/python bench/bench_retrieval.py [--student NAME=DIR ...] [--no-teacher]

Rows: BM25 alone; each student alone (exact search) and fused with BM25 at the shipped weight;
the teacher alone (exact search, needs the 'train' extra) and fused with BM25. A sweep of the
fusion weight follows, for choosing ``typeahead.retrieval.documents.SEMANTIC_WEIGHT``. Targets:
student
recall@10 >= 0.9 x the teacher's; fused beats BM25 alone and the teacher alone.

A last table scores instant results as served while the user types: questions cut 1-3
characters into a later word of 4 or more ("who founded the norm"), searched as served
(``DocsIndex.instant``: k=3, one per article, the relevance model); recall@3 and MRR@3
of the gold paragraph, and the share of keystrokes that show any result. Then the prefixes of
each title's first word, from 2 characters ("rh", "rhi", ... "rhine"): the share that shows a
result, and that shows a paragraph of that title first.
"""

from __future__ import annotations

import argparse
import functools
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from typeahead.corpus import read_records
from typeahead.embed.student import Student
from typeahead.eval.retrieval import score_rankings
from typeahead.retrieval import relevance
from typeahead.retrieval.documents import (
    SEMANTIC_WEIGHT,
    DocsIndex,
    build_docs_index,
    load_documents,
)

DOCS = Path("../shared/data/docs/squad2_dev_wikipedia_paragraphs.jsonl.gz")
QUESTIONS = Path("../shared/data/docs/squad2_dev_questions.jsonl.gz")
WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
TYPED_CASES = 4000  # typed-so-far keystrokes scored (a fixed, seeded sample)


def fuse(lexical: np.ndarray, semantic: np.ndarray, w: float, n: int = 50) -> np.ndarray:
    """The same rule as DocsIndex: w * cosine + (1 - w) * bm25 / max over the candidate union."""
    cand = np.union1d(np.argsort(-semantic)[:n], np.argsort(-lexical)[:n])
    top = lexical.max() or 1.0
    score = w * semantic[cand] + (1 - w) * lexical[cand] / top
    return cand[np.argsort(-score, kind="stable")]


def dense_rows(
    name: str,
    qv: np.ndarray,
    dv: np.ndarray,
    lex: np.ndarray,
    ids: list[str],
    golds: list[list[str]],
    weight: float,
) -> list[tuple[str, dict[str, float]]]:
    sims = qv @ dv.T
    alone = [[ids[j] for j in np.argsort(-s)[:10]] for s in sims]
    fused = [[ids[j] for j in fuse(lex[i], sims[i], weight)[:10]] for i in range(len(sims))]
    return [
        (f"{name} alone", score_rankings(alone, golds, 10)),
        (f"{name} + BM25 (w={weight})", score_rankings(fused, golds, 10)),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--student", action="append", default=[], help="NAME=DIR (default: shipped)")
    ap.add_argument("--docs", type=Path, default=DOCS)
    ap.add_argument("--questions", type=Path, default=QUESTIONS)
    ap.add_argument("--no-teacher", action="store_true")
    ap.add_argument("--teacher-cache", type=Path, default=Path("/tmp/typeahead_teacher_squad.npz"))
    args = ap.parse_args()
    docs = load_documents(args.docs)
    questions = [
        (str(r["question"]), [str(r["paragraph_id"])]) for _, r in read_records(args.questions)
    ]
    golds = [g for _, g in questions]
    ids = [d for d, _, _ in docs]
    students = [s.split("=", 1) for s in args.student] or [["shipped", ""]]
    rows: list[tuple[str, dict[str, float]]] = []
    lex: np.ndarray | None = None
    sweep: dict[str, list[str]] = {}
    typed: dict[str, dict[int, dict[str, float]]] = {}
    titles: dict[str, tuple[int, float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in students:
            student = Student.load(Path(path) if path else None)
            index_dir = Path(tmp) / name
            build_docs_index(args.docs, index_dir, student)
            index = DocsIndex.load(index_dir, student)
            if lex is None:
                lex = np.vstack([index._bm25.scores(q) for q, _ in questions])
                rows.append(("BM25 alone", _lexical(lex, ids, golds)))
            typed[f"student:{name}"] = typed_so_far(index, questions)
            titles[f"student:{name}"] = title_prefixes(index, docs)
            started = time.perf_counter()
            qv = student.encode([q for q, _ in questions])
            dv = student.encode([f"{t}. {x}" for _, t, x in docs])
            rows += dense_rows(f"student:{name}", qv, dv, lex, ids, golds, index.semantic_weight)
            sweep[f"student:{name}"] = [
                _fused_recall_mrr(lex, qv @ dv.T, w, ids, golds) for w in WEIGHTS
            ]
            print(
                f"student:{name} encoded {len(questions) + len(docs)} texts in "
                f"{time.perf_counter() - started:.2f} s",
                file=sys.stderr,
            )
    if not args.no_teacher and lex is not None:
        qv, dv = _teacher_vectors(args.teacher_cache, questions, docs)
        rows += dense_rows("teacher", qv, dv, lex, ids, golds, SEMANTIC_WEIGHT)
        sweep["teacher"] = [_fused_recall_mrr(lex, qv @ dv.T, w, ids, golds) for w in WEIGHTS]
    _print(rows, sweep)
    _print_typed(typed)
    print("\nprefixes of each title's first word (from 2 characters; k=3)")
    print(f"{'model':24} {'n':>6} {'shown':>6} {'title first':>12}")
    for name, (n, shown, first) in titles.items():
        print(f"{name:24} {n:6d} {shown:6.3f} {first:12.3f}")
    return 0


@functools.cache
def _served() -> relevance.ResultModel:
    return relevance.load().results


def title_prefixes(index: DocsIndex, docs: list[tuple[str, str, str]]) -> tuple[int, float, float]:
    """(prefixes, share showing a result, share showing a paragraph of that title first)."""
    shown = first = n = 0
    for title in sorted({t for _, t, _ in docs if t}):
        word = title.split()[0].strip("(),").lower()
        for end in range(2, len(word) + 1):
            got = index.instant(word[:end], 3, model=_served())
            n += 1
            shown += bool(got)
            first += bool(got) and got[0].title == title
    return n, shown / max(n, 1), first / max(n, 1)


def typed_cases(questions: list[tuple[str, list[str]]]) -> list[tuple[str, str, int]]:
    """(text typed so far, gold paragraph, characters of its last word) for a seeded sample."""
    cases = []
    for question, gold in questions:
        words = question.split()
        for i in range(1, len(words)):
            if len(words[i]) >= 4:
                cases += [(" ".join([*words[:i], words[i][:c]]), gold[0], c) for c in (1, 2, 3)]
    return random.Random(7).sample(cases, min(TYPED_CASES, len(cases)))


def typed_so_far(index: DocsIndex, questions: list[tuple[str, list[str]]]
                 ) -> dict[int, dict[str, float]]:
    """Recall@3, MRR@3 and the share shown, per characters typed of the last word (0: all)."""
    hits: dict[int, list[tuple[float, float, float]]] = {}
    for text, gold, chars in typed_cases(questions):
        got = [r.id for r in index.instant(text, 3, model=_served())]
        rr = next((1.0 / (rank + 1) for rank, doc in enumerate(got) if doc == gold), 0.0)
        for key in (0, chars):
            hits.setdefault(key, []).append((float(rr > 0), rr, float(bool(got))))
    out = {}
    for key, v in sorted(hits.items()):
        recall, mrr, shown = np.mean(np.asarray(v), axis=0).tolist()
        out[key] = {"recall": recall, "mrr": mrr, "shown": shown, "n": float(len(v))}
    return out


def _print_typed(typed: dict[str, dict[int, dict[str, float]]]) -> None:
    print("\ninstant results while typing (questions cut 1-3 characters into a word; k=3)")
    print(f"{'model':24} {'last word typed':>16} {'n':>6} {'recall@3':>9} {'MRR@3':>7} "
          f"{'shown':>6}")
    for name, by in typed.items():
        for key, s in by.items():
            label = "all" if key == 0 else f"{key} char" + ("s" if key > 1 else "")
            print(f"{name:24} {label:>16} {s['n']:6.0f} {s['recall']:9.3f} {s['mrr']:7.3f} "
                  f"{s['shown']:6.2f}")


def _lexical(lex: np.ndarray, ids: list[str], golds: list[list[str]]) -> dict[str, float]:
    ranked = [[ids[j] for j in np.argsort(-row, kind="stable")[:10] if row[j] > 0] for row in lex]
    return score_rankings(ranked, golds, 10)


def _fused_recall_mrr(
    lex: np.ndarray, sims: np.ndarray, w: float, ids: list[str], golds: list[list[str]]
) -> str:
    ranked = [[ids[j] for j in fuse(lex[i], sims[i], w)[:10]] for i in range(len(sims))]
    s = score_rankings(ranked, golds, 10)
    return f"{s['recall']:.3f}/{s['mrr']:.3f}"


def _teacher_vectors(
    cache: Path, questions: list[tuple[str, list[str]]], docs: list[tuple[str, str, str]]
) -> tuple[np.ndarray, np.ndarray]:
    if cache.exists():
        data = np.load(cache)
        if data["q"].shape[0] == len(questions) and data["d"].shape[0] == len(docs):
            return data["q"], data["d"]
    from typeahead.train.distill import load_teacher, teacher_encode

    teacher = load_teacher()
    qv = teacher_encode(teacher, [q for q, _ in questions])
    dv = teacher_encode(teacher, [f"{t}. {x}" for _, t, x in docs])
    np.savez(cache, q=qv, d=dv)
    return qv, dv


def _print(rows: list[tuple[str, dict[str, float]]], sweep: dict[str, list[str]]) -> None:
    print(f"\n{'ranking':40} {'recall@10':>10} {'MRR@10':>8}   (SQuAD dev questions -> paragraphs)")
    for name, s in rows:
        print(f"{name:40} {s['recall']:10.4f} {s['mrr']:8.4f}")
    teacher = next((s["recall"] for n, s in rows if n == "teacher alone"), None)
    for name, s in rows:
        if teacher and name.startswith("student") and name.endswith("alone"):
            print(f"{name}: {s['recall'] / teacher:.1%} of the teacher's recall@10")
    print("\nfusion weight sweep (recall@10/MRR@10):")
    print(f"{'model':24} " + " ".join(f"{'w=' + str(w):>13}" for w in WEIGHTS))
    for name, cells in sweep.items():
        print(f"{name:24} " + " ".join(f"{c:>13}" for c in cells))


if __name__ == "__main__":
    raise SystemExit(main())
