"""Train the ranking models of ``typeahead/assets/relevance``: numpy only, a minute on 2 cores.

    python -m typeahead.train.ranker --index indexes/aol --out typeahead/assets/relevance

Two models, each a handful of numbers:

- ``results``: the calibrated relevance of an instant result (``typeahead.retrieval.relevance``), a
  logistic regression. Positives: instant results of the gold article for the training split
  of the SQuAD questions and for their keystrokes (the question cut inside a later word).
  Negatives: every instant result for AOL queries of the training users (rows 1-800,000 of the
  log, queries that never occur in rows 800,001-999,999) and for their keystrokes from the
  second character, leaving out queries that name a topic the documents hold.
- ``sentences``: the answer-bearing sentence scorer (``typeahead.retrieval.answers``), learnt
  listwise (softmax over each question's sentences, the ones holding a gold answer as the
  target) on the training split of the SQuAD questions.
- ``paragraphs``: which paragraph of an article an instant result shows
  (``typeahead.retrieval.relevance.ParagraphModel``), learnt listwise over the article's
  ``PARAGRAPH_CANDIDATES`` best paragraphs by fused score, the gold one as the target, for the
  training questions whole and cut inside a later word.

Splits: a SQuAD question is held out when the first 8 hex digits of its text's SHA-1, mod 100,
are below 30 (``split_of``); AOL queries of the held-out users (rows 800,001-999,999) are never
trained on. ``bench/bench_answers.py`` reports on the held-out parts.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from typeahead.generation import Doc
from typeahead.manifest import describe_files, write_manifest
from typeahead.numbers import float_arg
from typeahead.retrieval import answers, relevance

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
QUESTIONS = DATA / "docs" / "squad2_dev_questions.jsonl.gz"
AOL = DATA / "typeahead" / "aol2006_q1m_counts.tsv.gz"
HELD_OUT_SHARE = 30  # percent of SQuAD questions held out
AOL_TRAIN_QUERIES = 3000
AOL_SHOWN_TARGET = 0.03  # the threshold keeps training AOL keystrokes showing a result below it
SEED = 7
# Chosen on the training questions (two folds): 4 candidates beat 3 (recall@3 0.914 against
# 0.905) and matched 6; filling free slots from 2 non-stop words on cost nothing on whole
# questions against filling always, 3 words cost 0.003. With the sentence-cosine and
# word-pair features, one result per article, whole questions: recall@3 0.831 / 0.834 /
# 0.834 / 0.833 with 3 / 4 / 6 / 8 candidates.
PARAGRAPH_CANDIDATES = 4
FILL_MIN_WORDS = 2


def split_of(question: str) -> str:
    """``test`` (held out) or ``train`` for a SQuAD question, by a hash of its text."""
    bucket = int(hashlib.sha1(question.encode()).hexdigest()[:8], 16) % 100
    return "test" if bucket < HELD_OUT_SHARE else "train"


def squad_questions(path: Path, part: str, *, answerable: bool = True) -> list[dict[str, Any]]:
    from typeahead.corpus import read_records

    return [r for _, r in read_records(path)
            if split_of(str(r["question"])) == part
            and not (answerable and (r.get("is_impossible") or not r.get("answers")))]


def aol_queries(path: Path, part: str, limit: int) -> list[str]:
    """The most frequent AOL queries of the training users that the held-out users never typed
    (``train``), or the most frequent of the held-out users (``test``)."""
    out: list[tuple[int, str]] = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            query, _, first, second = line.rstrip("\n").split("\t")
            if part == "train" and int(second) == 0 and int(first) > 0:
                out.append((int(first), query))
            elif part == "test" and int(second) > 0:
                out.append((int(second), query))
    out.sort(key=lambda c: -c[0])
    return [q for _, q in out[:limit]]


def keystrokes(query: str, start: int = 2) -> Iterator[str]:
    """What a search box sends while ``query`` is typed: every prefix from ``start`` chars."""
    for end in range(start, len(query) + 1):
        if query[end - 1] != " ":
            yield query[:end]


def question_keystrokes(question: str, rng: random.Random, per_question: int = 3) -> list[str]:
    """The question whole, plus a few cuts 1-3 characters into a later word of 4+."""
    words = question.split()
    cuts = [" ".join([*words[:i], words[i][:c]]) for i in range(1, len(words))
            if len(words[i]) >= 4 for c in (1, 2, 3)]
    return [question, *rng.sample(cuts, min(per_question, len(cuts)))]


# --- the sentence scorer --------------------------------------------------------------------


def sentence_examples(index: Any, questions: Sequence[dict[str, Any]]
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(features, holds-an-answer) per question, over its candidate passages as a job sees
    them: first all CANDIDATE_PASSAGES in retrieval order, then the re-ranked few in order."""
    student = index.student
    out = []
    for r in questions:
        q = str(r["question"])
        docs = [Doc(*p) for p in index.passages(q, answers.CANDIDATE_PASSAGES)]
        sents, x = answers.features(q, docs, student, student.fingerprint)
        golds = [str(a).lower() for a in r["answers"]]
        y = np.array([any(a in s.text.lower() for a in golds) for s in sents], dtype=np.float64)
        if y.any():
            out.append((x, y))
    return out


def fit_listwise(examples: Sequence[tuple[np.ndarray, np.ndarray]], *, l2: float = 1e-3,
                 steps: int = 300, rate: float = 0.05,
                 names: Sequence[str] = answers.FEATURES) -> dict[str, Any]:
    """Softmax over each list's items (a question's sentences, an article's paragraphs),
    maximising the share on the positive ones; Adam on standardised features."""
    every = np.vstack([x for x, _ in examples])
    mean, scale = every.mean(axis=0), every.std(axis=0)
    scale[scale == 0] = 1.0
    zs = [((x - mean) / scale, y) for x, y in examples]
    w = np.zeros(every.shape[1])
    m, v = np.zeros_like(w), np.zeros_like(w)
    for step in range(1, steps + 1):
        grad = l2 * w
        for z, y in zs:
            s = z @ w
            p = np.exp(s - s.max())
            p /= p.sum()
            q = y * p / (y * p).sum()
            grad += z.T @ (p - q) / len(zs)
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad * grad
        w -= rate * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    return {"features": list(names), "weights": w.tolist(), "mean": mean.tolist(),
            "scale": scale.tolist()}


# --- the paragraph an article shows ---------------------------------------------------------


def paragraph_examples(index: Any, squad: Sequence[dict[str, Any]], rng: random.Random
                       ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(features, is-the-gold-paragraph) over the gold article's candidate paragraphs, per
    keystroke of a training question that has the gold one among several candidates."""
    out = []
    for r in squad:
        for text in question_keystrokes(str(r["question"]), rng):
            cands = index.article_paragraphs(text, str(r["title"]), PARAGRAPH_CANDIDATES)
            y = np.array([doc_id == r["paragraph_id"] for doc_id, _ in cands], dtype=np.float64)
            if len(cands) > 1 and y.any():
                out.append((np.asarray([row for _, row in cands], dtype=np.float64), y))
    return out


def fit_paragraphs(index: Any, squad: Sequence[dict[str, Any]]) -> dict[str, Any]:
    model = fit_listwise(paragraph_examples(index, squad, random.Random(SEED)),
                         names=relevance.PARAGRAPH_FEATURES)
    return {**model, "candidates": PARAGRAPH_CANDIDATES, "fill_min_words": FILL_MIN_WORDS}


# --- the instant-result relevance model -----------------------------------------------------


def result_examples(index: Any, squad: Sequence[dict[str, Any]], aol: Sequence[str],
                    rng: random.Random) -> tuple[np.ndarray, ...]:
    """(features, label, weight, keystroke number, from AOL) per instant result shown by the
    search before the floor."""
    xs: list[list[float]] = []
    ys: list[float] = []
    ws: list[float] = []
    group: list[int] = []
    n = 0
    for r in squad:
        for text in question_keystrokes(str(r["question"]), rng):
            n += 1
            for row, result in relevance.candidates(index, text, relevance.SCORED):
                xs.append(row)
                ys.append(float(result.title == r["title"]))
                ws.append(1.0)
                group.append(n)
    first_aol = len(ys)
    weight = len(squad) / max(1, len(aol))
    for query in aol:
        if relevance.held_topic(query, index.titles):
            continue
        strokes = list(keystrokes(query))
        for text in strokes:
            n += 1
            for row, _ in relevance.candidates(index, text, relevance.SCORED):
                xs.append(row)
                ys.append(0.0)
                ws.append(weight * 4.0 / len(strokes))
                group.append(n)
    from_aol = np.arange(len(ys)) >= first_aol
    return np.asarray(xs), np.asarray(ys), np.asarray(ws), np.asarray(group), from_aol


def choose_threshold(model: dict[str, Any], x: np.ndarray, group: np.ndarray,
                     from_aol: np.ndarray, aol_share: float = AOL_SHOWN_TARGET) -> float:
    """The lowest threshold (step 0.05) at which at most ``aol_share`` of the training AOL
    keystrokes show a result: every result shown below it would cost precision."""
    z = model["bias"] + ((x - np.asarray(model["mean"])) / np.asarray(model["scale"])) \
        @ np.asarray(model["weights"])
    p = 1 / (1 + np.exp(-z))
    strokes = np.unique(group[from_aol])
    for t in np.arange(0.05, 1.0, 0.05):
        shown = np.unique(group[from_aol & (p >= t)])
        if len(shown) <= aol_share * len(strokes):
            return round(float(t), 2)
    return 0.95


def fit_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 1.0,
                 iterations: int = 50) -> dict[str, Any]:
    """Weighted L2-regularised logistic regression by Newton's method, standardised inputs."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    beta = np.zeros(z.shape[1])
    ridge = np.eye(z.shape[1]) * l2
    ridge[-1, -1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ beta)))
        grad = z.T @ (w * (p - y)) + ridge @ beta
        hess = (z * (w * p * (1 - p))[:, None]).T @ z + ridge
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-9:
            break
    return {"features": list(relevance.FEATURES), "weights": beta[:-1].tolist(),
            "bias": float(beta[-1]), "mean": mean.tolist(), "scale": scale.tolist()}


# --- command line ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    from typeahead.embed import Student
    from typeahead.retrieval import DocsIndex, docs_dir

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, default=Path("indexes/aol"))
    ap.add_argument("--out", type=Path, default=Path(relevance.MODEL_DIR))
    ap.add_argument("--questions", type=Path, default=QUESTIONS)
    ap.add_argument("--aol", type=Path, default=AOL)
    ap.add_argument("--threshold", type=float_arg(0.0, 1.0), default=None,
                    help="relevance to show a result (default: the lowest at which at most "
                         f"{AOL_SHOWN_TARGET:.0%} of the training AOL keystrokes show one)")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    student = Student.load(None)
    index = DocsIndex.load(docs_dir(args.index), student)
    squad = squad_questions(args.questions, "train")
    rng = random.Random(SEED)
    sentences = fit_listwise(sentence_examples(index, squad))
    sentences["student"] = student.fingerprint
    x, y, w, group, from_aol = result_examples(
        index, squad, aol_queries(args.aol, "train", AOL_TRAIN_QUERIES), rng)
    results = fit_logistic(x, y, w)
    results["threshold"] = args.threshold if args.threshold is not None else \
        choose_threshold(results, x, group, from_aol)
    results["student"] = student.fingerprint
    args.out.mkdir(parents=True, exist_ok=True)
    paragraphs = fit_paragraphs(index, squad)
    relevance.write_params(args.out, {"results": results, "sentences": sentences,
                                      "paragraphs": paragraphs})
    write_manifest(args.out, {
        "kind": relevance.KIND, "format_version": relevance.FORMAT_VERSION,
        "trainer": "typeahead.train.ranker", "seed": SEED,
        "student": {"fingerprint": student.fingerprint},
        "training_data": {"squad_questions": len(squad), "result_rows": len(y),
                          "result_positives": int(y.sum()),
                          "split": f"SQuAD: sha1(question) % 100 >= {HELD_OUT_SHARE}; AOL: "
                                   "queries of rows 1-800,000 only"},
        "train_seconds": round(time.perf_counter() - started, 1),
        "files": describe_files(args.out, [args.out / relevance.PARAMS]),
    })
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
