"""Training the intent classifier (scikit-learn; never imported by the serving process).

Sources and how their labels map to ``navigational`` / ``informational`` / ``transactional``
(see docs/intent.md for the reasons):

* ``trec_web_query_types.tsv``: home-page and named-page finding -> navigational; topic
  distillation and ad hoc -> informational.
* ``trec_web_2009_2014_topics.tsv``: the topic query takes the majority type of its subtopics
  (``nav`` -> navigational, ``inf`` -> informational; ties dropped); topics without subtopics
  (type ``single``) are informational, as their descriptions are questions.
* ``trec_web_2009_2014_subtopics.tsv``: each subtopic's natural-language text, ``nav`` ->
  navigational, ``inf`` and the typo ``inv`` -> informational, the ambiguous typo ``inav``
  dropped.
* ``dbpedia_entity_v2_queries.tsv``: ``named_entity`` -> navigational (go to this entity);
  ``nl_question``, ``keyword`` and ``entity_list`` -> informational.
* ``query_wellformedness.tsv.gz``: every row is a WikiAnswers question -> informational
  (a sample, so that it does not drown the web queries).
* AOL 2006 log (weak labels, optional): rules in :func:`weak_label`, kept only where exactly
  one rule fires; the only source of ``transactional``.

Every example belongs to a group (its normalised query, or its Web Track topic) and a stable
hash of the group puts it in train, dev (calibration and threshold) or test (never used in
training or model selection).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from typeahead.corpus import read_rows
from typeahead.embed import Embedder
from typeahead.errors import DataError
from typeahead.eval import Labelled, evaluate
from typeahead.intent import (
    AUX_WORDS,
    FEATURE_NAMES,
    FORMAT_VERSION,
    INFO_CUES,
    INFORMATIONAL,
    KIND,
    LABELS,
    PARAMS_FILE,
    QUESTION_WORDS,
    SITES_FILE,
    TRANS_CUES,
    WEIGHTS_FILE,
    IntentClassifier,
    lexical_features,
    looks_personal,
)
from typeahead.manifest import atomic_directory, describe_files, sha256_file, write_manifest
from typeahead.normalize import normalize

NAV, INF, TRANS = LABELS
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"
INTENT_FILES = {
    "trec_types": "intent/trec_web_query_types.tsv",
    "web_topics": "intent/trec_web_2009_2014_topics.tsv",
    "web_subtopics": "intent/trec_web_2009_2014_subtopics.tsv",
    "dbpedia": "intent/dbpedia_entity_v2_queries.tsv",
    "wellformedness": "intent/query_wellformedness.tsv.gz",
}
AOL_FILE = "typeahead/aol2006_q1m_counts.tsv.gz"
# The held-out sources that are web queries (not descriptions or WikiAnswers questions): the
# headline "offer vs not" figure is computed on their test split.
WEB_QUERY_SOURCES = ("trec_types", "web_topics", "dbpedia")
# How much each source weighs in the loss, in total: the human-labelled web queries matter
# most; the large question set must not drown them. The weak AOL labels weigh 2: dev macro-F1
# is flat from 0.5 to 2, and at 2 the model learns that bare site names (`ebay`) are navigational.
SOURCE_WEIGHTS = {
    "trec_types": 3.0,
    "web_topics": 1.0,
    "web_subtopics": 1.0,
    "dbpedia": 1.5,
    "wellformedness": 1.0,
    "aol_weak": 2.0,
}
# Each source's raw label -> ours; recorded in the model manifest. Raw labels not listed are
# dropped (the typo "inav" of the 2011 Web Track could be either).
LABEL_MAPS: dict[str, dict[str, str]] = {
    "trec_types": {"hp": NAV, "np": NAV, "td": INF, "adhoc": INF},
    "web_subtopics": {"nav": NAV, "inf": INF, "inv": INF},
    "web_topics": {"majority of subtopics nav": NAV, "majority inf": INF, "single": INF},
    "dbpedia": {"named_entity": NAV, "nl_question": INF, "keyword": INF, "entity_list": INF},
    "wellformedness": {"any": INF},
    "aol_weak": {"url/site/login": NAV, "question/topical cue": INF, "buy/download cue": TRANS},
}
WELLFORMEDNESS_SAMPLE = 3000
AOL_MIN_COUNT = 2
AOL_PER_LABEL = 2000
TEST_SHARE, DEV_SHARE = 20, 15  # percent of groups
C_GRID = (0.03, 0.1, 0.3, 1.0)


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    label: str
    source: str
    group: str


@dataclass(slots=True)
class Dataset:
    examples: list[Example]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    sites: frozenset[str] = frozenset()


# --- sources ----------------------------------------------------------------------------------


def _rows(path: Path, text_col: str) -> Iterable[dict[str, Any]]:
    return (row.record for row in read_rows(path, text_col=text_col) if row.text.strip())


def load_trec_types(path: Path) -> list[Example]:
    mapping = LABEL_MAPS["trec_types"]
    return [
        Example(r["query"].strip(), mapping[r["trec_type"]], "trec_types", normalize(r["query"]))
        for r in _rows(path, "query")
        if r["trec_type"] in mapping
    ]


def load_web_track(topics: Path, subtopics: Path) -> list[Example]:
    votes: dict[str, Counter[str]] = {}
    out: list[Example] = []
    sub_map = LABEL_MAPS["web_subtopics"]
    for r in _rows(subtopics, "subtopic_text"):
        group = normalize(r["topic_query"])
        label = sub_map.get(r["subtopic_type"])
        if label is None:
            continue
        votes.setdefault(f"{r['year']}:{r['topic_id']}", Counter())[label] += 1
        out.append(Example(r["subtopic_text"].strip(), label, "web_subtopics", group))
    for r in _rows(topics, "query"):
        label = _majority(votes.get(f"{r['year']}:{r['topic_id']}"), r["topic_type"])
        if label is not None:
            out.append(Example(r["query"].strip(), label, "web_topics", normalize(r["query"])))
    return out


def _majority(counts: Counter[str] | None, topic_type: str) -> str | None:
    if not counts:
        return INF if topic_type == "single" else None
    if counts[NAV] == counts[INF]:
        return None
    return NAV if counts[NAV] > counts[INF] else INF


def load_dbpedia(path: Path) -> list[Example]:
    mapping = LABEL_MAPS["dbpedia"]
    return [
        Example(r["query"].strip(), mapping[r["category"]], "dbpedia", normalize(r["query"]))
        for r in _rows(path, "query")
        if r["category"] in mapping
    ]


def load_wellformedness(path: Path, sample: int, seed: int) -> list[Example]:
    texts = sorted({r["query"].strip() for r in _rows(path, "query")})
    random.Random(seed).shuffle(texts)
    return [Example(t, INF, "wellformedness", normalize(t)) for t in texts[:sample]]


# --- weak labels on the AOL log -------------------------------------------------------------------

_SITE = re.compile(r"(?:www\.)?([a-z0-9-]{2,})\.(?:com|net|org)\b")
_URLISH = re.compile(r"(?:https?://|www\.|\.(?:com|org|net|gov|edu)\b)")
NAV_WORDS = frozenset({"homepage", "website", "login", "signin"})


def site_names(queries: Iterable[tuple[str, int]], min_count: int = 3) -> frozenset[str]:
    """Names typed as a domain (``ebay`` from ``ebay.com``) at least ``min_count`` times."""
    counts: Counter[str] = Counter()
    for query, count in queries:
        for name in _SITE.findall(query):
            counts[name.replace("-", "")] += count
    return frozenset(name for name, c in counts.items() if c >= min_count)


def rule_hits(text: str, sites: frozenset[str] = frozenset()) -> set[str]:
    """Every label a cue votes for (ORCAS-I-style rules: URLs, site names, question words,
    buy/price/download cues)."""
    low = normalize(text)
    words = low.split()
    wordset = set(words)
    hits: set[str] = set()
    if _URLISH.search(low) or low.replace(" ", "") in sites or wordset & NAV_WORDS:
        hits.add(NAV)
    if wordset & TRANS_CUES:
        hits.add(TRANS)
    first = words[0] if words else ""
    if first in QUESTION_WORDS or first in AUX_WORDS or low.endswith("?") or wordset & INFO_CUES:
        hits.add(INF)
    return hits


def weak_label(text: str, sites: frozenset[str]) -> str | None:
    """A weak label where exactly one rule fires, else None."""
    hits = rule_hits(text, sites)
    return hits.pop() if len(hits) == 1 else None


def rule_baseline(text: str, sites: frozenset[str] = frozenset()) -> str:
    """The rule baseline: a question beats everything, then buy cues, then site cues, then
    topical cues; no cue means navigational (the majority of short web queries)."""
    hits = rule_hits(text, sites)
    low = normalize(text)
    first = low.split(" ", 1)[0]
    if first in QUESTION_WORDS or first in AUX_WORDS or low.endswith("?"):
        return INF
    for label in (TRANS, NAV, INF):
        if label in hits:
            return label
    return NAV


def read_aol(path: Path, weight_col: str = "count_total") -> list[tuple[str, int]]:
    rows = read_rows(path, text_col="query", weight_col=weight_col)
    return [(r.text, int(r.weight)) for r in rows]


def _weak_labels(log: Sequence[tuple[str, int]], sites: frozenset[str], head: frozenset[str],
                 min_count: int, combine: str) -> list[tuple[str, str | None]]:
    from typeahead.train import intent_weak as W

    queries = [q for q, c in log if c >= min_count and not looks_personal(q)]
    matrix = W.votes(queries, W.default_lfs(sites, head))
    if combine == "majority":
        return [(q, W.majority_vote(row)) for q, row in zip(queries, matrix, strict=True)]
    model = W.LabelModel.fit(matrix)
    progress("label model accuracies: " + ", ".join(f"{a:.2f}" for a in model.accuracies))
    return [(q, model.predict(row)) for q, row in zip(queries, matrix, strict=True)]


def load_aol_weak(
    path: Path, *, min_count: int, per_label: int, seed: int, combine: str = "single_rule",
    head: frozenset[str] = frozenset(),
) -> tuple[list[Example], frozenset[str]]:
    """Weak labels on the AOL log. ``combine``: ``single_rule`` (a label where exactly one
    rule fires, over every row), or ``majority`` / ``label_model`` (the labelling functions of
    ``typeahead.train.intent_weak`` over the training rows 1-800,000 only, combined by a majority
    vote with abstains or by the label model)."""
    if combine == "single_rule":
        log = read_aol(path)
        sites = site_names(log)
        labelled = [(q, weak_label(q, sites)) for q, c in log
                    if c >= min_count and not looks_personal(q)]
    else:
        log = read_aol(path, weight_col="count_rows_1_800000")
        sites = site_names(log)
        labelled = _weak_labels(log, sites, head, min_count, combine)
    by_label: dict[str, list[str]] = {label: [] for label in LABELS}
    for query, label in labelled:
        if label is not None:
            by_label[label].append(query)
    rng = random.Random(seed)
    out: list[Example] = []
    for label, queries in by_label.items():
        rng.shuffle(queries)
        out.extend(Example(q, label, "aol_weak", normalize(q)) for q in queries[:per_label])
    return out, sites


def load_sources(data_dir: Path, *, weak: bool = True, seed: int = 0) -> Dataset:
    """Every labelled example, with the checksum of each file read."""
    paths = {key: data_dir / rel for key, rel in INTENT_FILES.items()}
    paths["aol"] = data_dir / AOL_FILE  # weak labels, and the site names either way
    for key, path in paths.items():
        if not path.is_file():
            raise DataError(f"intent training data {path} ({key}) is missing; pass --data DIR")
    examples = [
        *load_trec_types(paths["trec_types"]),
        *load_web_track(paths["web_topics"], paths["web_subtopics"]),
        *load_dbpedia(paths["dbpedia"]),
        *load_wellformedness(paths["wellformedness"], WELLFORMEDNESS_SAMPLE, seed),
    ]
    aol, sites = load_aol_weak(
        paths["aol"], min_count=AOL_MIN_COUNT, per_label=AOL_PER_LABEL, seed=seed
    )
    if weak:
        examples.extend(aol)
    files = {
        str(p.relative_to(data_dir)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in paths.values()
    }
    return Dataset(examples, files, sites)


# --- splits -----------------------------------------------------------------------------------


def split_of(group: str) -> str:
    bucket = int(hashlib.sha1(group.encode()).hexdigest()[:8], 16) % 100
    if bucket < TEST_SHARE:
        return "test"
    return "dev" if bucket < TEST_SHARE + DEV_SHARE else "train"


def split(examples: Sequence[Example]) -> dict[str, list[Example]]:
    """train / dev / test by group; weak AOL labels only ever train (they are rules, and
    evaluating on them would measure the rules)."""
    out: dict[str, list[Example]] = {"train": [], "dev": [], "test": []}
    for ex in examples:
        part = split_of(ex.group)
        if ex.source == "aol_weak" and part != "train":
            continue
        out[part].append(ex)
    return out


def by_source(examples: Sequence[Example]) -> dict[str, list[Example]]:
    """Examples per source, plus ``web_queries``: the held-out web-query sources together."""
    out: dict[str, list[Example]] = {}
    for ex in examples:
        out.setdefault(ex.source, []).append(ex)
    out["web_queries"] = [ex for ex in examples if ex.source in WEB_QUERY_SOURCES]
    return out


def with_lowercase_copies(examples: Sequence[Example]) -> list[Example]:
    """Add an all-lower-case copy of every cased example: typeahead input is often lower-case,
    and the model must not read "no capitals" as a label cue learnt from one source's style."""
    out = list(examples)
    out.extend(
        Example(ex.text.lower(), ex.label, ex.source, ex.group)
        for ex in examples
        if ex.text != ex.text.lower()
    )
    return out


# --- features and fitting -----------------------------------------------------------------------


def lexical_matrix(texts: Sequence[str], sites: frozenset[str]) -> np.ndarray:
    return np.asarray([lexical_features(t, sites) for t in texts], dtype=np.float64)


def embed(embedder: Embedder, texts: Sequence[str], batch: int = 512) -> np.ndarray:
    out = np.empty((len(texts), embedder.dim), dtype=np.float32)
    for start in range(0, len(texts), batch):
        out[start : start + batch] = embedder.encode(list(texts[start : start + batch]))
        progress(f"embedded {min(start + batch, len(texts))}/{len(texts)}")
    return out


def sample_weights(examples: Sequence[Example]) -> np.ndarray:
    """Each source's total weight is SOURCE_WEIGHTS[source]; mean weight 1."""
    sizes = Counter(ex.source for ex in examples)
    w = np.asarray([SOURCE_WEIGHTS.get(ex.source, 1.0) / sizes[ex.source] for ex in examples])
    return w * (len(w) / w.sum())


@dataclass(slots=True)
class Fitted:
    weights: np.ndarray  # (labels, dim + lexical), lexical part on standardised features
    params: dict[str, Any]
    threshold: float
    curve: list[dict[str, float]]
    c: float
    sites: frozenset[str] = frozenset()


def fit(
    embedder: Embedder,
    parts: dict[str, list[Example]],
    sites: frozenset[str] = frozenset(),
    *,
    seed: int = 0,
) -> tuple[Fitted, IntentClassifier]:
    """Logistic regression on [embedding, standardised lexical cues]; C chosen on dev by log
    loss; temperature on dev; threshold from the dev precision/recall curve."""
    from sklearn.linear_model import LogisticRegression

    train = with_lowercase_copies(parts["train"])
    x_train, mean, scale = _design(embedder, [e.text for e in train], sites)
    y_train = np.asarray([LABELS.index(e.label) for e in train])
    w_train = sample_weights(train)
    dev = parts["dev"]
    dev_texts = [e.text for e in dev]
    dev_emb = embed(embedder, dev_texts)
    x_dev = np.hstack([dev_emb, (lexical_matrix(dev_texts, sites) - mean) / scale])
    y_dev = np.asarray([LABELS.index(e.label) for e in dev])
    w_dev = sample_weights(dev)
    best: tuple[float, float, Any] | None = None
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=3000, random_state=seed)
        model.fit(x_train, y_train, sample_weight=w_train)
        loss = _nll(_logits(model, x_dev), y_dev, w_dev, 1.0)
        progress(f"C={c}: dev log-loss {loss:.4f}")
        if best is None or loss < best[0]:
            best = (loss, c, model)
    assert best is not None
    _, c, model = best
    temperature = fit_temperature(_logits(model, x_dev), y_dev, w_dev)
    weights, bias = full_rows(model)
    params = {
        "bias": bias.tolist(),
        "lexical_mean": mean.tolist(),
        "lexical_scale": scale.tolist(),
        "temperature": temperature,
    }
    probe = IntentClassifier(embedder, weights, params, threshold=0.5, sites=sites)
    threshold, curve = choose_threshold(probe, dev, dev_emb)
    classifier = IntentClassifier(embedder, weights, params, threshold=threshold, sites=sites)
    return Fitted(weights, params, threshold, curve, c, sites), classifier


def _design(
    embedder: Embedder, texts: Sequence[str], sites: frozenset[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lex = lexical_matrix(texts, sites)
    mean = lex.mean(axis=0)
    std = lex.std(axis=0)
    scale = np.where(std > 1e-6, std, 1.0)
    return np.hstack([embed(embedder, texts), (lex - mean) / scale]), mean, scale


# A label the training data lacks (transactional without weak labels) gets this bias: it is
# then never predicted, and the runtime still sees all three rows.
ABSENT_BIAS = -30.0


def full_rows(model: Any) -> tuple[np.ndarray, np.ndarray]:
    """(weights, bias) with one row per label in LABELS order, whatever classes were seen."""
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # sklearn keeps one row: class 1 against class 0
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    weights = np.zeros((len(LABELS), coef.shape[1]), dtype=np.float32)
    bias = np.full(len(LABELS), ABSENT_BIAS)
    for row, cls in enumerate(model.classes_):
        weights[int(cls)] = coef[row]
        bias[int(cls)] = intercept[row]
    return weights, bias


def _logits(model: Any, x: np.ndarray) -> np.ndarray:
    weights, bias = full_rows(model)
    out: np.ndarray = x @ weights.T.astype(np.float64) + bias
    return out


def _nll(logits: np.ndarray, y: np.ndarray, weights: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-(weights * logp[np.arange(len(y)), y]).sum() / weights.sum())


def fit_temperature(logits: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float:
    """The temperature minimising weighted held-out log loss (golden-section search on log T)."""
    lo, hi = math.log(0.05), math.log(20.0)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        a = hi - ratio * (hi - lo)
        b = lo + ratio * (hi - lo)
        if _nll(logits, y, weights, math.exp(a)) < _nll(logits, y, weights, math.exp(b)):
            hi = b
        else:
            lo = a
    return math.exp((lo + hi) / 2)


def offer_scores(
    classifier: IntentClassifier, texts: Sequence[str], embeddings: np.ndarray
) -> list[float]:
    """P(informational) where the label is informational and the text is not personal, else 0:
    an offer is made exactly when this score is above the threshold."""
    out = []
    for text, vec in zip(texts, embeddings, strict=True):
        probs = classifier.probabilities(text, vec)
        ok = max(probs) == probs[INFORMATIONAL] and not looks_personal(text)
        out.append(probs[INFORMATIONAL] if ok else 0.0)
    return out


def choose_threshold(
    classifier: IntentClassifier, dev: Sequence[Example], embeddings: np.ndarray
) -> tuple[float, list[dict[str, float]]]:
    """Walk the precision/recall curve of the offer decision on the dev web queries; pick the
    threshold with the best offer-vs-not macro-F1 (ties: the higher threshold, fewer offers)."""
    keep = [i for i, e in enumerate(dev) if e.source in WEB_QUERY_SOURCES] or list(range(len(dev)))
    texts = [dev[i].text for i in keep]
    scores = np.asarray(offer_scores(classifier, texts, embeddings[keep]))
    gold = np.asarray([dev[i].label == INF for i in keep])
    curve = []
    for t in np.round(np.arange(0.30, 0.96, 0.01), 2):
        pred = scores > t
        curve.append({"threshold": float(t), **_binary_scores(gold, pred)})
    best = max(curve, key=lambda p: (round(p["macro_f1"], 4), p["threshold"]))
    return best["threshold"], curve


def _binary_scores(gold: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    def f1(g: np.ndarray, p: np.ndarray) -> tuple[float, float, float]:
        tp, n_pred, n_gold = float((g & p).sum()), float(p.sum()), float(g.sum())
        prec = tp / n_pred if n_pred else 0.0
        rec = tp / n_gold if n_gold else 0.0
        return prec, rec, (2 * prec * rec / (prec + rec) if prec + rec else 0.0)

    p1, r1, f_offer = f1(gold, pred)
    _, _, f_none = f1(~gold, ~pred)
    return {"precision": p1, "recall": r1, "f1": f_offer, "macro_f1": (f_offer + f_none) / 2}


# --- the command ---------------------------------------------------------------------------------


def train(
    data_dir: Path,
    out_dir: Path,
    embedder: Embedder,
    *,
    weak: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Train on ``data_dir``, write the model directory ``out_dir``, return its manifest."""
    started = time.perf_counter()
    data = load_sources(data_dir, weak=weak, seed=seed)
    parts = split(data.examples)
    progress("examples: " + ", ".join(f"{k} {len(v)}" for k, v in parts.items()))
    fitted, classifier = fit(embedder, parts, data.sites, seed=seed)
    metrics = {
        source: evaluate(classifier, [Labelled(e.text, e.label) for e in examples])
        for source, examples in by_source(parts["test"]).items()
    }
    manifest = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "labels": list(LABELS),
        "lexical_features": list(FEATURE_NAMES),
        "student": {"fingerprint": embedder.fingerprint, "dim": embedder.dim},
        "threshold": fitted.threshold,
        "temperature": fitted.params["temperature"],
        "C": fitted.c,
        "training_data": data.files,
        "examples": {
            k: dict(Counter(f"{e.source}:{e.label}" for e in v)) for k, v in parts.items()
        },
        "label_maps": LABEL_MAPS,
        "source_weights": SOURCE_WEIGHTS,
        "weak_labels": weak,
        "seed": seed,
        "dev_pr_curve": fitted.curve,
        "test_metrics": metrics,
        "trainer": "typeahead.train.intent",
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    save_model(out_dir, fitted, manifest)
    return manifest


def _census(examples: Sequence[Example]) -> dict[str, int]:
    return dict(sorted(Counter(f"{e.source}:{e.label}" for e in examples).items()))


def save_model(out_dir: Path, fitted: Fitted, manifest: dict[str, Any]) -> None:
    with atomic_directory(out_dir, kind=KIND) as tmp:
        np.save(tmp / WEIGHTS_FILE, fitted.weights.astype(np.float32))
        (tmp / PARAMS_FILE).write_text(json.dumps(fitted.params, indent=2) + "\n")
        (tmp / SITES_FILE).write_text(json.dumps(sorted(fitted.sites)) + "\n")
        files = describe_files(tmp, [tmp / WEIGHTS_FILE, tmp / PARAMS_FILE, tmp / SITES_FILE])
        write_manifest(tmp, {**manifest, "files": files})


def progress(message: str) -> None:
    print(f"train-intent: {message}", file=sys.stderr, flush=True)
