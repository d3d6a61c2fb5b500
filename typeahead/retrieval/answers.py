"""Answer-bearing sentences: which sentences of the grounding passages answer a question.

A generation job retrieves candidate passages (``CANDIDATE_PASSAGES``, fused student + BM25),
scores every sentence of them for how likely it holds the answer, and keeps the passages whose
best sentence scores highest (``rerank``). The GPU-free summariser then picks, from those
passages, the best-scoring sentences within a word budget (``pick``); vLLM gets the same
passages, best first.

A sentence's score is a linear function of cheap features, learnt listwise (softmax over a
question's sentences) on the training split of the public SQuAD dev questions
(``typeahead.train.ranker``): the IDF-weighted share of the question's words it holds (IDF
over the candidate sentences, so a word every sentence shares counts little), their proximity,
shared bigrams, the student's cosine, whether the sentence holds a candidate answer of the type
the question asks for (who: capitalised names; when: years, dates; how many: numbers; where:
places) that the question does not already hold, the passage's rank and retrieval score, and
interactions of these. Pure Python and numpy: serving processes stay torch-free.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from typeahead.embed import Embedder

__all__ = [
    "CANDIDATE_PASSAGES",
    "FEATURES",
    "Passage",
    "SentenceModel",
    "features",
    "pick",
    "question_type",
    "rerank",
    "split_sentences",
]

CANDIDATE_PASSAGES = 20  # passages a job re-ranks (SQuAD: the gold one is among them 98.7%)
MAX_WORDS = 60  # the summary's word budget (a sentence that does not fit is skipped)
MAX_SENTENCES = 3

_TOKEN = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
# Question words and function words: they locate nothing in a passage.
_STOP = frozenset(
    [
        "a", "an", "and", "are", "as", "at", "be", "by", "did", "do", "does", "for", "from",
        "had", "has", "have", "how", "i", "in", "is", "it", "its", "of", "on", "or", "that",
        "the", "their", "there", "these", "this", "to", "was", "were", "what", "when", "where",
        "which", "who", "whom", "whose", "why", "will", "with", "into", "than", "then", "they",
        "them", "he", "she", "his", "her", "been", "being", "can", "could", "would", "should",
        "may", "might", "not", "no", "but", "if", "also", "other", "such", "one", "used", "use",
        "called", "known", "many", "much", "most", "more", "some", "any", "all", "during",
        "after", "before", "about", "over", "under", "between", "through", "while"
    ]
)
_PRONOUNS = frozenset(
    [
        "he", "she", "it", "they", "this", "these", "his", "its", "their", "her", "that",
        "those", "such"
    ]
)
_MONTHS = frozenset(
    [
        "january", "february", "march", "april", "may", "june", "july", "august", "september",
        "october", "november", "december"
    ]
)
_NUMBER_WORDS = frozenset(
    [
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "twenty", "thirty", "forty", "fifty", "hundred", "thousand", "million",
        "billion", "dozen"
    ]
)
_DATE = re.compile(
    r"\b(1[0-9]{3}|20[0-9]{2})s?\b|\b\d{1,2}(st|nd|rd|th) century\b|\bcentur(y|ies)\b"
    r"|\b\d+ (BC|AD|BCE|CE)\b", re.IGNORECASE,
)
_NUMBER = re.compile(r"\b\d[\d,.]*\b")
_TYPES = (
    ("number", re.compile(
        r"\bhow (many|much|long|old|far|large|big|tall|high)\b"
        r"|\bwhat (percentage|percent|number|amount|proportion)\b|\bpopulation\b")),
    ("date", re.compile(
        r"\bwhen\b|\bwhat (year|years|century|decade|date|time|period|month|day|era)\b"
        r"|\bwhich (year|century|decade)\b")),
    ("person", re.compile(
        r"\bwho\b|\bwhom\b|\bwhose\b"
        r"|\bwhat (person|man|woman|king|emperor|leader|scientist|president)\b")),
    ("place", re.compile(
        r"\bwhere\b|\b(what|which) (country|city|region|state|place|continent|area|town|river"
        r"|island)\b")),
)
FEATURES = (
    "coverage", "matched_share", "proximity", "typed", "typed_coverage", "typed_count",
    "cosine", "passage_score", "passage_rank", "first", "log_length", "bigrams",
    "previous_coverage", "pronoun", "typed_date", "typed_number", "typed_person", "typed_place",
    "capitalised", "novel", "coverage_x_cosine", "coverage_x_rank", "cosine_x_rank",
    "typed_x_coverage", "coverage_sq", "cosine_sq",
)


class Passage(Protocol):
    """What ``rerank`` and ``pick`` read of a passage (``typeahead.generation.prompt.Doc`` has
    it)."""

    @property
    def text(self) -> str: ...

    @property
    def score(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Sentence:
    doc: int  # index of its passage in the list given
    pos: int  # position within the passage
    text: str


@dataclass(frozen=True)
class SentenceModel:
    """The learnt sentence scorer: standardised features times weights."""

    weights: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    student: str  # fingerprint of the student whose cosines it was trained on

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> SentenceModel:
        if tuple(params.get("features", ())) != FEATURES:
            raise ValueError("sentence model features differ from this build's")
        weights, mean, scale = (np.asarray(params[k], dtype=np.float64)
                                for k in ("weights", "mean", "scale"))
        return cls(weights, mean, scale, str(params.get("student", "")))

    def score(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.weights


def split_sentences(text: str, min_chars: int = 15) -> list[str]:
    parts = (p.strip() for p in _SENTENCE_END.split(" ".join(text.split())))
    return [p for p in parts if len(p) >= min_chars]


# A job's candidate passages hold a few thousand words, mostly common ones: remembering their
# stems took a job's re-ranking from 5.8 to 4.3 ms (p50, in-process, AOL index, the project's
# shared 2-core VM, 5 Dec 2026), which the API pays for every job it runs inline.
STEM_MEMORY = 1 << 16


@functools.lru_cache(maxsize=STEM_MEMORY)
def stem(word: str) -> str:
    """A crude suffix-stripping stem, enough to match "founded" to "founder" and "normans"
    to "norman" (a real stemmer would be another dependency for a feature)."""
    word = word.lower()
    for suffix in ("ization", "ation", "ings", "ing", "ies", "ied", "ed", "es", "s", "ly"):
        if len(word) - len(suffix) >= 4 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    return word[:7]


def question_type(question: str) -> str | None:
    """number, date, person, place, or None (what, why, how: no answer type)."""
    low = question.lower()
    return next((name for name, pattern in _TYPES if pattern.search(low)), None)


def _typed_count(sentence: str, kind: str | None, capitalised: int) -> int:
    """Candidate answers of ``kind`` in ``sentence`` that the question does not already hold
    (``capitalised``: its ``_capitalised`` count, the candidates for a person or a place)."""
    if kind == "date":
        return len(_DATE.findall(sentence)) + sum(
            w in _MONTHS for w in _TOKEN.findall(sentence.lower()))
    if kind == "number":
        return len(_NUMBER.findall(sentence)) + sum(
            w in _NUMBER_WORDS for w in _TOKEN.findall(sentence.lower()))
    if kind in ("person", "place"):
        return capitalised
    return 0


def _capitalised(sentence: str, asked: frozenset[str]) -> int:
    """Capitalised words past the first that the question does not hold (names, places)."""
    words = _TOKEN.findall(sentence)
    return sum(1 for w in words[1:] if w[:1].isupper() and w.lower() not in _STOP
               and stem(w) not in asked)


@dataclass(frozen=True)
class _Question:
    kind: str | None
    stems: frozenset[str]
    bigrams: frozenset[tuple[str, str]]


def _analyse(question: str) -> _Question:
    stems = [stem(w) for w in _TOKEN.findall(question.lower()) if w not in _STOP]
    return _Question(question_type(question), frozenset(stems),
                     frozenset(itertools.pairwise(stems)))


def features(question: str, passages: Sequence[Passage], embedder: Embedder | None,
             student: str = "") -> tuple[list[Sentence], np.ndarray]:
    """Every sentence of ``passages`` and its feature row (columns: ``FEATURES``).

    ``embedder`` gives the cosine feature when its fingerprint is ``student`` (the model was
    trained on that student's cosines); otherwise the cosine is a constant the standardisation
    turns to nothing."""
    q = _analyse(question)
    sents = [Sentence(d, i, s) for d, p in enumerate(passages)
             for i, s in enumerate(split_sentences(p.text))]
    if not sents:
        return [], np.zeros((0, len(FEATURES)))
    tokens = [[stem(w) for w in _TOKEN.findall(s.text.lower())] for s in sents]
    idf = _local_idf(q.stems, tokens)
    total = sum(idf.values()) or 1.0
    coverage = [sum(idf[t] for t in q.stems.intersection(tk)) / total for tk in tokens]
    cosine = _cosines(question, sents, embedder, student)
    top = max((p.score for p in passages), default=0.0) or 1.0
    rows = [_row(q, s, tk, coverage, k, cosine[k], passages[s.doc].score / top, sents)
            for k, (s, tk) in enumerate(zip(sents, tokens, strict=True))]
    return sents, np.asarray(rows, dtype=np.float64)


def _local_idf(stems: frozenset[str], tokens: list[list[str]]) -> dict[str, float]:
    df: Counter[str] = Counter()
    for tk in tokens:
        df.update(stems.intersection(tk))
    n = len(tokens)
    return {t: math.log(1.0 + n / (1.0 + df[t])) for t in stems}


def _cosines(question: str, sents: list[Sentence], embedder: Embedder | None,
             student: str) -> np.ndarray:
    if embedder is None or not student or embedder.fingerprint != student:
        return np.zeros(len(sents))
    vecs = np.asarray(embedder.encode([question] + [s.text for s in sents]), dtype=np.float64)
    return vecs[1:] @ vecs[0]


def _row(q: _Question, s: Sentence, tk: list[str], coverage: list[float], k: int,
         cosine: float, passage_score: float, sents: list[Sentence]) -> list[float]:
    matched = q.stems.intersection(tk)
    where = [i for i, w in enumerate(tk) if w in q.stems]
    proximity = len(matched) / (where[-1] - where[0] + 1) if len(where) > 1 else 0.0
    capitalised = _capitalised(s.text, q.stems)
    typed_count = _typed_count(s.text, q.kind, capitalised) if q.kind else 0
    typed = float(typed_count > 0)
    cov = coverage[k]
    rank = 1.0 / (1 + s.doc)
    first_word = next(iter(_TOKEN.findall(s.text.lower()[:40])), "")
    previous = coverage[k - 1] if k > 0 and sents[k - 1].doc == s.doc else 0.0
    return [
        cov, len(matched) / max(1, len(q.stems)), proximity, typed, typed * cov,
        min(typed_count, 3) / 3, cosine, passage_score, rank, float(s.pos == 0),
        math.log(1 + len(tk)),
        min(sum(b in q.bigrams for b in itertools.pairwise(tk)), 3) / 3,
        previous, float(first_word in _PRONOUNS),
        typed * (q.kind == "date"), typed * (q.kind == "number"),
        typed * (q.kind == "person"), typed * (q.kind == "place"),
        min(capitalised, 4) / 4,
        math.log(1 + sum(1 for w in tk if w not in q.stems and w not in _STOP)),
        cov * cosine, cov * rank, cosine * rank, typed * cov, cov * cov, cosine * cosine,
    ]


def sentence_scores(question: str, passages: Sequence[Passage], embedder: Embedder | None,
                    model: SentenceModel) -> tuple[list[Sentence], np.ndarray]:
    sents, x = features(question, passages, embedder, model.student)
    if not sents:
        return sents, np.zeros(0)
    scores = model.score(x)
    subject = definition_subject(question)
    if subject:
        scores += DEFINES_BONUS * np.array([_defines(s.text, subject) for s in sents])
    return sents, scores


# "who were the normans", "what is oxygen": the answer is the sentence that defines the
# subject ("The Normans (...) were the people who..."), which the learnt scorer, trained on
# SQuAD's factoid questions (few of them definitions), ranked below sentences that merely
# mention it ("These Normans began a long period of slow conquest..."). Such a sentence is
# put first (on the held-out SQuAD questions the answer rate went from 0.874 to 0.877).
DEFINES_BONUS = 10.0
_DEFINITION = re.compile(r"^\s*(?:who|what)\s+(?:is|are|was|were)\s+(?:an?\s+|the\s+)?"
                         r"([^?]+?)\s*\??\s*$", re.IGNORECASE)
_COPULA = frozenset(["is", "are", "was", "were", "refers"])
_PARENTHESES = re.compile(r"\([^()]*\)")


def definition_subject(question: str) -> tuple[str, ...]:
    """The stems of what a "who/what is X" question asks to define (X of up to 4 words)."""
    found = _DEFINITION.match(question)
    if not found:
        return ()
    words = [stem(w) for w in _TOKEN.findall(found.group(1).lower()) if w not in _STOP]
    return tuple(words) if 0 < len(words) <= 4 else ()


def _defines(sentence: str, subject: tuple[str, ...]) -> float:
    """Whether ``sentence`` opens with the subject and then a copula, parentheses aside
    ("The Normans (Norman: Nourmands; ...) were the people who...")."""
    words = _TOKEN.findall(_PARENTHESES.sub(" ", sentence).lower())[: len(subject) + 4]
    stems = [stem(w) for w in words]
    if not all(s in stems[: len(subject) + 2] for s in subject):
        return 0.0
    after = max(stems.index(s) for s in subject)
    return float(any(w in _COPULA for w in words[after + 1 : after + 3]))


def rerank(question: str, passages: Sequence[Any], embedder: Embedder | None,
           model: SentenceModel, k: int) -> list[Any]:
    """The k passages whose best sentence scores highest, best first (ties: retrieval order);
    a passage with no sentence keeps its place behind those that have one."""
    sents, scores = sentence_scores(question, passages, embedder, model)
    best = [-math.inf] * len(passages)
    for s, score in zip(sents, scores.tolist(), strict=True):
        best[s.doc] = max(best[s.doc], score)
    order = sorted(range(len(passages)), key=lambda d: (-best[d], d))
    return [passages[d] for d in order[:k]]


def pick(question: str, passages: Sequence[Passage], embedder: Embedder | None,
         model: SentenceModel, *, max_words: int = MAX_WORDS,
         max_sentences: int = MAX_SENTENCES) -> list[Sentence]:
    """The best-scoring sentences that fit the word budget (the best one always does), without
    near-repeats, in reading order: passage order, then position."""
    sents, scores = sentence_scores(question, passages, embedder, model)
    chosen: list[int] = []
    words = 0
    for k in np.argsort(-scores, kind="stable").tolist():
        length = len(sents[k].text.split())
        if chosen and (words + length > max_words or _repeats(sents, chosen, k)):
            continue
        chosen.append(k)
        words += length
        if len(chosen) >= max_sentences:
            break
    return [sents[k] for k in sorted(chosen, key=lambda k: (sents[k].doc, sents[k].pos))]


def _repeats(sents: list[Sentence], chosen: list[int], k: int, limit: float = 0.6) -> bool:
    """Whether sentence k shares most of its words with one already chosen (Jaccard)."""
    words = set(_TOKEN.findall(sents[k].text.lower()))
    for c in chosen:
        other = set(_TOKEN.findall(sents[c].text.lower()))
        if len(words & other) > limit * len(words | other):
            return True
    return False
