"""The ranking models: calibrated relevance of instant results, and the answer-sentence scorer.

Both are a few numbers in ``typeahead/assets/relevance/params.json``, checked against the
manifest beside it (kind, format version, checksum) when loaded, and learnt by
``typeahead.train.ranker`` (numpy only; the serving process never imports torch).

**Instant results.** A logistic regression over features the keystroke's search has already
computed (``FEATURES``: fused score, cosine, BM25 score absolute and relative to the best,
share and IDF-weighted share of the query's words the document holds, share in its title,
margin to the next result, rank, query length, characters of the word being typed, share of
unknown words, IDF of the rarest word it holds relative to an unseen word's). Its output is
the probability that the result is on the article the input is about; a result is shown when
it is at least ``threshold``, and that probability is its score.

**The paragraph an article shows.** A linear scorer over ``PARAGRAPH_FEATURES`` of the
article's few best paragraphs by fused score (``typeahead.retrieval.documents.paragraph_features``:
gaps to the best candidate in fused score, cosine, BM25, the IDF-weighted share of the
query's words the paragraph, its best sentence and its best two sentences hold, its best
sentence's cosine (the sentence vectors stored with the documents index) and the share of the
query's word pairs it holds), learnt
listwise on the training split of the SQuAD questions. The first is shown; the others fill
the slots no other article passing the floor takes, for inputs of ``fill_min_words`` words
or more.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from typeahead.assets import RELEVANCE_DIR
from typeahead.errors import ArtifactError
from typeahead.manifest import read_manifest, verify_files
from typeahead.retrieval.answers import SentenceModel

__all__ = ["FEATURES", "PARAGRAPH_FEATURES", "Models", "ParagraphModel", "ResultModel",
           "held_topic", "load"]

KIND = "relevance-model"
FORMAT_VERSION = 2  # 2: with the paragraph chooser
PARAMS = "params.json"
MODEL_DIR = RELEVANCE_DIR
DEFAULT_THRESHOLD = 0.5
SCORED = 3  # results scored per keystroke when training (the served results_k)
FEATURES = (
    "fused", "cosine", "log_bm25", "bm25_relative", "matched_share", "idf_coverage",
    "title_share", "margin", "rank", "words", "partial_chars", "unknown_share", "log_chars",
    "rarest_match",
)
PARAGRAPH_FEATURES = (
    "fused_gap", "cosine_gap", "bm25_gap", "coverage_gap", "sentence_gap", "sentence",
    "two_sentences_gap", "first", "sentence_cosine_gap", "pair_gap",
)


@dataclass(frozen=True)
class ParagraphModel:
    """Which of an article's ``candidates`` best paragraphs (by fused score) an instant result
    shows: the highest ``weights . x`` (standardisation folded in; the constant part, equal
    for every candidate, dropped)."""

    weights: tuple[float, ...]
    candidates: int
    fill_min_words: int  # inputs with fewer non-stop words show one paragraph per article

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ParagraphModel:
        if tuple(params.get("features", ())) != PARAGRAPH_FEATURES:
            raise ValueError("paragraph model features differ from this build's; retrain it")
        weights = tuple(float(a) / float(s) for a, s in zip(params["weights"], params["scale"],
                                                            strict=True))
        candidates, fill = int(params["candidates"]), int(params["fill_min_words"])
        if candidates < 1 or fill < 0:
            raise ValueError("paragraph model: candidates must be >= 1, fill_min_words >= 0")
        return cls(weights, candidates, fill)

    def order(self, cands: Sequence[tuple[int, float]], rows: Sequence[Sequence[float]]
              ) -> list[tuple[int, float]]:
        """``cands`` best first by this model (ties: their given order)."""
        scores = [sum(map(operator.mul, self.weights, row)) for row in rows]
        ranked = sorted(range(len(cands)), key=lambda i: -scores[i])
        return [cands[i] for i in ranked]


@dataclass(frozen=True)
class ResultModel:
    """``sigmoid(bias + weights . x)`` with the standardisation folded into the weights, so a
    keystroke costs one short Python dot product per result (no numpy call overhead)."""

    weights: tuple[float, ...]
    bias: float
    threshold: float
    paragraphs: ParagraphModel | None = None  # None: each article shows its fused best

    @classmethod
    def from_params(cls, params: dict[str, Any], threshold: float | None = None,
                    paragraphs: ParagraphModel | None = None) -> ResultModel:
        if tuple(params.get("features", ())) != FEATURES:
            raise ArtifactError("relevance model features differ from this build's; retrain it")
        w = [float(a) / float(s) for a, s in zip(params["weights"], params["scale"], strict=True)]
        bias = float(params["bias"]) - sum(a * float(m) for a, m in zip(w, params["mean"],
                                                                          strict=True))
        chosen = float(params["threshold"]) if threshold is None else threshold
        return cls(tuple(w), bias, chosen, paragraphs)

    def probability(self, row: Sequence[float]) -> float:
        z = self.bias + sum(map(operator.mul, self.weights, row))
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


@dataclass(frozen=True)
class Models:
    results: ResultModel
    sentences: SentenceModel
    manifest: dict[str, Any]


def read_params(model_dir: Path) -> dict[str, Any]:
    params: dict[str, Any] = orjson.loads((model_dir / PARAMS).read_bytes())
    return params


def write_params(model_dir: Path, params: dict[str, Any]) -> None:
    (model_dir / PARAMS).write_bytes(orjson.dumps(params, option=orjson.OPT_INDENT_2))


def load(model_dir: Path | None = None, *, threshold: float | None = None) -> Models:
    """The models of ``model_dir`` (None: the packaged ones), manifest and checksum checked."""
    root = model_dir or MODEL_DIR
    manifest = read_manifest(root, kind=KIND, version=FORMAT_VERSION)
    verify_files(root, manifest, checksums=True)
    try:
        params = read_params(root)
        paragraphs = ParagraphModel.from_params(params["paragraphs"])
        return Models(ResultModel.from_params(params["results"], threshold, paragraphs),
                      SentenceModel.from_params(params["sentences"]), manifest)
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{root}: unusable relevance model ({exc})") from exc


def held_topic(query: str, titles: Sequence[str]) -> bool:
    """Whether ``query`` names an article's topic: it holds a word of 4+ letters from exactly
    one title ("harvard", "rhine"; not "university", which two titles share). Used to leave such
    queries out of the negatives and of the off-topic share."""
    from typeahead.retrieval.documents import terms_of

    counts: dict[str, int] = {}
    for title in titles:
        for word in set(terms_of(title)):
            counts[word] = counts.get(word, 0) + 1
    return any(len(w) >= 4 and counts.get(w) == 1 for w in terms_of(query))


def candidates(index: Any, text: str, k: int) -> list[tuple[list[float], Any]]:
    """(features, result) of the k best instant results for ``text`` before any floor."""
    return [(row, result) for result, row in index.scored(text, k, features=True)]
