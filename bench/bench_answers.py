"""Answers and instant results on held-out data: does the product answer the question?

    .venv/bin/python bench/bench_answers.py [--index indexes/aol] [--models DIR] [--limit N]

Held out (never trained or tuned on, see typeahead/train/ranker.py): the SQuAD questions
whose SHA-1 bucket is below 30 (answerable ones: 430), and the 1,000 most frequent AOL queries
of the held-out users (rows 800,001-999,999 of the log).

Tables:
1. GPU-free summaries: the gold answer in the summary, the gold paragraph among the sources,
   mean words; and the CPU time a job spends before its first token (retrieval of the
   candidate passages, re-ranking, the summary's first piece), in-process.
2. Instant results, as served (k=3): recall@3 and MRR@3 of the gold paragraph and of its
   article, the share of keystrokes showing any result, the mean number of results and the
   share of keystrokes whose results repeat a title; on whole questions, on questions cut
   1-3 characters into a later word, and on every keystroke of the AOL queries (those whose
   topic the documents do not hold, and all). Rows: the calibrated relevance model with one
   result per article and the paragraph chooser (served); the same with free slots filled
   from the shown articles (``TYPEAHEAD_RESULTS_FILL``, off by default: it repeats titles);
   with each article's fused best paragraph; with any number per article; and the former
   fused-score floor of 0.4 without collapsing.
3. The relevance threshold's precision/recall: per threshold, the share of shown SQuAD
   results on the question's article (precision), the share of SQuAD keystrokes showing their
   article (recall), and the share of off-topic AOL keystrokes showing anything.
4. Recall@10 of the fused ranking (unchanged by this model).
5. In-process CPU per keystroke of the relevance step: instant results with the model and one
   per article, against the same search with neither (its features, the dot product and the
   collapse), over the AOL keystrokes, best of three passes. Then the paragraph step (the
   chooser) per keystroke: served against the model without the chooser,
   each keystroke timed three times each way (the least kept), p50 / p99 of both and of the
   difference, on held-out SQuAD keystrokes and on AOL keystrokes. Not a latency benchmark:
   a shared machine's figures move by several microseconds from run to run.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from typeahead.embed.student import Student
from typeahead.generation.extractive import pieces, summarise
from typeahead.generation.prompt import Doc
from typeahead.generation.worker import DOCS_PER_SUMMARY
from typeahead.retrieval import answers, relevance
from typeahead.retrieval.documents import DocsIndex, docs_dir
from typeahead.train.ranker import (
    AOL,
    QUESTIONS,
    aol_queries,
    keystrokes,
    question_keystrokes,
    squad_questions,
)

OLD_FLOOR = 0.4
THRESHOLDS = (0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def summaries(index: DocsIndex, models: relevance.Models, questions: list[dict]) -> None:
    hit = src = words = 0
    waits: list[float] = []
    for r in questions:
        q = str(r["question"])
        started = time.process_time()
        cands = [Doc(*p) for p in index.passages(q, answers.CANDIDATE_PASSAGES)]
        docs = answers.rerank(q, cands, index.student, models.sentences, DOCS_PER_SUMMARY)
        text = summarise(q, docs, index.student, models.sentences)
        pieces(text)
        waits.append((time.process_time() - started) * 1000)
        hit += any(str(a).lower() in text.lower() for a in r["answers"])
        src += r["paragraph_id"] in [d.id for d in docs]
        words += len(text.split())
    n = len(questions)
    print(f"\nGPU-free summaries, held-out SQuAD questions (n={n}, {DOCS_PER_SUMMARY} sources)")
    print(f"{'answer in summary':>18} {'gold among sources':>19} {'mean words':>11} "
          f"{'CPU before 1st token p50/p99 ms':>32}")
    p50, p99 = np.percentile(waits, [50, 99])
    print(f"{hit / n:18.3f} {src / n:19.3f} {words / n:11.1f} {p50:20.1f} / {p99:.1f}")


def instant_rows(index: DocsIndex, models: relevance.Models, questions: list[dict],
                 aol: list[str]) -> None:
    rng = random.Random(7)
    whole = [(str(r["question"]), r) for r in questions]
    typed = [(t, r) for r in questions
             for t in question_keystrokes(str(r["question"]), rng)[1:]]
    off = [s for q in aol if not relevance.held_topic(q, index.titles) for s in keystrokes(q)]
    every = [s for q in aol for s in keystrokes(q)]
    print("\ninstant results (k=3), held-out SQuAD questions and AOL queries")
    print(f"{'ranking':36} {'input':22} {'n':>6} {'recall@3':>9} {'MRR@3':>7} "
          f"{'article@3':>10} {'shown':>7} {'results':>8} {'same title':>11}")
    for name, search in _rankings(index, models).items():
        for label, cases in (("whole questions", whole), ("cut mid-word", typed)):
            rec = mrr = art = 0.0
            lists = []
            for text, r in cases:
                got = search(text)
                lists.append(got)
                ids = [g.id for g in got]
                rank = ids.index(r["paragraph_id"]) + 1 if r["paragraph_id"] in ids else 0
                rec += rank > 0
                mrr += 1 / rank if rank else 0.0
                art += any(g.title == r["title"] for g in got)
            n = len(cases)
            print(f"{name:36} {label:22} {n:6d} {rec / n:9.3f} {mrr / n:7.3f} {art / n:10.3f} "
                  + _shown(lists))
        for label, strokes in (("AOL off-topic strokes", off), ("AOL all strokes", every)):
            print(f"{name:36} {label:22} {len(strokes):6d} {'':>9} {'':>7} {'':>10} "
                  + _shown([search(s) for s in strokes]))


def _rankings(index: DocsIndex, models: relevance.Models) -> dict[str, Any]:
    served = models.results
    fused_best = dataclasses.replace(served, paragraphs=None)
    return {
        "served: 1/article, chosen": lambda t: index.instant(t, 3, model=served),
        "1/article, chosen, filled (RESULTS_FILL)": lambda t: index.instant(t, 3, model=served,
                                                                            fill=True),
        "1/article, fused best (before)": lambda t: index.instant(t, 3, model=fused_best),
        "relevance model, any/article": lambda t: index.instant(t, 3, per_article=0,
                                                                model=served),
        f"fused >= {OLD_FLOOR}, no collapse": lambda t: index.search(
            t, 3, partial=True, min_score=OLD_FLOOR),
    }


def _shown(lists: list[list[Any]]) -> str:
    """Share of keystrokes showing a result, results per keystroke, share repeating a title."""
    n = max(1, len(lists))
    shown = sum(bool(got) for got in lists) / n
    mean = sum(len(got) for got in lists) / n
    repeats = sum(len({g.title for g in got}) < len(got) for got in lists) / n
    return f"{shown:7.3f} {mean:8.2f} {repeats:11.3f}"


def pr_curve(index: DocsIndex, models: relevance.Models, questions: list[dict],
             aol: list[str]) -> None:
    rng = random.Random(7)
    cases = [(t, r["title"]) for r in questions
             for t in question_keystrokes(str(r["question"]), rng)]
    probs = [[(models.results.probability(row), res.title == title)
              for res, row in index.scored(t, 3, features=True)] for t, title in cases]
    off = [s for q in aol if not relevance.held_topic(q, index.titles) for s in keystrokes(q)]
    off_probs = [max((models.results.probability(row) for _, row in
                      index.scored(s, 3, features=True)), default=0.0) for s in off]
    print("\nrelevance threshold: precision / recall on held-out SQuAD keystrokes "
          f"(n={len(cases)}), shown on off-topic AOL keystrokes (n={len(off)})")
    print(f"{'threshold':>9} {'precision':>10} {'recall':>7} {'AOL shown':>10}")
    for t in THRESHOLDS:
        shown = [ok for case in probs for p, ok in case if p >= t]
        recall = sum(any(p >= t and ok for p, ok in case) for case in probs) / len(probs)
        precision = sum(shown) / max(1, len(shown))
        aol_shown = sum(p >= t for p in off_probs) / max(1, len(off_probs))
        mark = "  <- served" if abs(t - models.results.threshold) < 1e-9 else ""
        print(f"{t:9.2f} {precision:10.3f} {recall:7.3f} {aol_shown:10.3f}{mark}")


def recall_at_10(index: DocsIndex, questions: list[dict]) -> None:
    got = [[p[0] for p in index.passages(str(r["question"]), 10)] for r in questions]
    rec = np.mean([r["paragraph_id"] in g for r, g in zip(questions, got, strict=True)])
    print(f"\nfused ranking, whole held-out questions: recall@10 {rec:.3f}")


def keystroke_cost(index: DocsIndex, models: relevance.Models, aol: list[str]) -> None:
    strokes = [s for q in aol for s in keystrokes(q)][:3000]
    ways = {"fused only": {"per_article": 0, "model": None},
            "model + 1/article": {"per_article": 1, "model": models.results}}
    cost = {}
    for name, kwargs in ways.items():
        passes = []
        for _ in range(3):
            started = time.process_time()
            for s in strokes:
                index.instant(s, 3, **kwargs)  # type: ignore[arg-type]
            passes.append((time.process_time() - started) / len(strokes) * 1e6)
        cost[name] = min(passes)
    print(f"\nCPU per keystroke, in-process (n={len(strokes)} AOL keystrokes, k=3): "
          + ", ".join(f"{n} {c:.1f} us" for n, c in cost.items())
          + f"; the relevance step adds {cost['model + 1/article'] - cost['fused only']:.1f} us")


def paragraph_cost(index: DocsIndex, models: relevance.Models, questions: list[dict],
                   aol: list[str]) -> None:
    rng = random.Random(7)
    squad = [t for r in questions for t in question_keystrokes(str(r["question"]), rng)]
    plain = dataclasses.replace(models.results, paragraphs=None)
    print("\nparagraph step (the chooser) per keystroke, in-process wall time, least of "
          "3 each way (us)")
    print(f"{'keystrokes':22} {'n':>6} {'served p50/p99':>16} {'without p50/p99':>16} "
          f"{'added p50/p99':>15}")
    for label, strokes in (("held-out SQuAD", squad),
                           ("AOL", [s for q in aol for s in keystrokes(q)][:3000])):
        with_, without = [], []
        for s in strokes:
            timings: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(3):
                for chosen, model in ((True, models.results), (False, plain)):
                    started = time.perf_counter_ns()
                    index.instant(s, 3, model=model)
                    timings[chosen].append((time.perf_counter_ns() - started) / 1000)
            with_.append(min(timings[True]))
            without.append(min(timings[False]))
        added = np.subtract(with_, without)
        cells = [np.percentile(v, [50, 99]) for v in (with_, without, added)]
        print(f"{label:22} {len(strokes):6d} "
              + " ".join(f"{a:7.1f} / {b:6.1f}" for a, b in cells))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, default=Path("indexes/aol"))
    ap.add_argument("--models", type=Path, default=None, help="default: the packaged models")
    ap.add_argument("--questions", type=Path, default=QUESTIONS)
    ap.add_argument("--aol", type=Path, default=AOL)
    ap.add_argument("--aol-queries", type=int, default=1000)
    ap.add_argument("--limit", type=int, default=None, help="first N held-out questions only")
    args = ap.parse_args()
    index = DocsIndex.load(docs_dir(args.index), Student.load(None))
    models = relevance.load(args.models)
    questions = squad_questions(args.questions, "test")[: args.limit]
    aol = aol_queries(args.aol, "test", args.aol_queries)
    summaries(index, models, questions)
    instant_rows(index, models, questions, aol)
    pr_curve(index, models, questions, aol)
    recall_at_10(index, questions)
    keystroke_cost(index, models, aol)
    paragraph_cost(index, models, questions, aol)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
