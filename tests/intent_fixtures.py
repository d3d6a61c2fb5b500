"""Tiny fixtures for the intent tests: a student-like embedder and a miniature data directory."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from typeahead.intent.classifier import FEATURE_NAMES, LABELS, IntentClassifier


class TinyEmbedder:
    """Hashed bag of words, L2-normalised: the student's interface at a few dozen dimensions."""

    def __init__(self, dim: int = 32, fingerprint: str = "tiny-embedder-1") -> None:
        self.dim = dim
        self.fingerprint = fingerprint

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, zlib.crc32(word.encode()) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=out, where=norms > 0)


def hand_classifier(embedder: TinyEmbedder, threshold: float = 0.5) -> IntentClassifier:
    """A classifier with hand-set weights: a leading question word -> informational (logit 4),
    a buy/download cue -> transactional (logit 2), otherwise all logits 0 (navigational wins
    the tie, being first)."""
    weights = np.zeros((len(LABELS), embedder.dim + len(FEATURE_NAMES)), dtype=np.float32)
    weights[
        LABELS.index("informational"), embedder.dim + FEATURE_NAMES.index("starts_question_word")
    ] = 4.0
    weights[LABELS.index("transactional"), embedder.dim + FEATURE_NAMES.index("trans_cue")] = 2.0
    params = {
        "bias": [0.0, 0.0, 0.0],
        "lexical_mean": [0.0] * len(FEATURE_NAMES),
        "lexical_scale": [1.0] * len(FEATURE_NAMES),
        "temperature": 1.0,
    }
    return IntentClassifier(embedder, weights, params, threshold=threshold)


NAV_QUERIES = [
    "ebay",
    "Bank of America",
    "facebook login",
    "www.target.com",
    "Official site of the NBA",
    "mapquest",
    "Home page of the IRS",
    "yahoo mail",
    "Delta Airlines",
    "cnn.com",
    "Washington Post",
    "wells fargo online",
    "EPA Global Warming",
    "myspace",
    "Peace Corps",
]
INF_QUERIES = [
    "how tall is the eiffel tower",
    "What is the capital of France?",
    "why is the sky blue",
    "history of the roman empire",
    "symptoms of flu",
    "who wrote hamlet",
    "how do vaccines work",
    "tell me about pier 57 in nyc",
    "when did ww2 end",
    "What causes earthquakes",
    "where do penguins live",
    "meaning of life",
    "how to make bread",
    "what are black holes",
    "benefits of green tea",
]
TRANS_QUERIES = [
    "buy cheap shoes",
    "download free music",
    "cheap flights to paris",
    "concert tickets",
    "car rental deals",
    "buy iphone",
    "free ringtones",
    "apartment for rent",
    "discount coupons",
    "mp3 downloads",
]


def write_data_dir(root: Path) -> Path:
    """A miniature copy of ../shared/data with every file train-intent reads."""
    intent = root / "intent"
    intent.mkdir(parents=True)
    _tsv(
        intent / "trec_web_query_types.tsv",
        ["source", "year", "topic_id", "query", "trec_task", "trec_type", "intent"],
        [
            ["t", "2002", f"NP{i}", q, "named_page", "np", "navigational"]
            for i, q in enumerate(NAV_QUERIES)
        ]
        + [
            ["t", "2002", f"TD{i}", q, "topic_distillation", "td", "informational"]
            for i, q in enumerate(INF_QUERIES)
        ],
    )
    _tsv(
        intent / "trec_web_2009_2014_topics.tsv",
        ["year", "topic_id", "query", "topic_type", "description"],
        [
            ["2009", "1", "obama family tree", "faceted", "Find information on Obama's family."],
            ["2013", "2", "rules of golf", "single", "What are the rules of golf?"],
        ],
    )
    _tsv(
        intent / "trec_web_2009_2014_subtopics.tsv",
        [
            "year",
            "topic_id",
            "topic_query",
            "topic_type",
            "subtopic_id",
            "subtopic_type",
            "subtopic_text",
        ],
        [
            ["2009", "1", "obama family tree", "faceted", "1", "nav", "Find the TIME photo essay."],
            ["2009", "1", "obama family tree", "faceted", "2", "inf", "Where was Obama born?"],
            ["2009", "1", "obama family tree", "faceted", "3", "inf", "Who was Obama's mother?"],
            ["2009", "1", "obama family tree", "faceted", "4", "inav", "An ambiguous typo."],
        ],
    )
    _tsv(
        intent / "dbpedia_entity_v2_queries.tsv",
        ["query_id", "query", "source_set", "category"],
        [
            ["a", "B. F. Skinner", "SemSearch_ES", "named_entity"],
            ["b", "Who is the mayor of Berlin?", "QALD2_tr", "nl_question"],
            ["c", "vietnam war facts", "INEX_LD", "keyword"],
            ["d", "Neil Gaiman novels", "INEX_XER", "entity_list"],
        ],
    )
    _tsv(
        intent / "query_wellformedness.tsv.gz",
        ["split", "query", "wellformedness"],
        [
            ["train", "What is the population of Peru ?", "1.0"],
            ["train", "How many legs does a spider have ?", "0.8"],
        ],
    )
    aol = root / "typeahead"
    aol.mkdir()
    log = [*NAV_QUERIES, *INF_QUERIES, *TRANS_QUERIES, "ebay.com", "ebay.com", "www.ebay.com"]
    _tsv(
        aol / "aol2006_q1m_counts.tsv.gz",
        ["query", "count_total", "count_rows_1_800000", "count_rows_800001_999999"],
        [[q.lower(), "5", "4", "1"] for q in log],
    )
    return root


def _tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    text = "\n".join("\t".join(r) for r in [header, *rows]) + "\n"
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
