"""Weak supervision: labelling functions over queries, combined with abstains.

In the spirit of ORCAS-I (keyword, URL and heuristic rules through a label model): each
labelling function votes for one label or abstains (None). Two combiners:

* :func:`majority_vote`: the most voted label; ties and all-abstain give None;
* :class:`LabelModel`: each function's accuracy is estimated from its agreement with the
  majority vote of the *other* functions on the queries where both voted, and votes are
  weighted by their log-odds ``log(acc / (1 - acc))`` (a one-step Dawid-Skene); a query gets
  the label with the largest summed weight, None when nothing voted or the best label's
  weight is not positive.

Training-only code (no scikit-learn needed, but the serving process never imports it).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from typeahead.intent import AUX_WORDS, INFO_CUES, LABELS, QUESTION_WORDS, TRANS_CUES

NAV, INF, TRANS = LABELS
Vote = str | None
LabellingFunction = Callable[[str], Vote]

_URL = re.compile(r"(?:https?://|www\.|\.(?:com|org|net|gov|edu)\b)")
_NAV_WORDS = frozenset({"homepage", "website", "login", "signin", "official"})


def lf_url(q: str) -> Vote:
    return NAV if _URL.search(q) else None


def lf_nav_word(q: str) -> Vote:
    return NAV if _NAV_WORDS.intersection(q.split()) else None


def lf_question(q: str) -> Vote:
    words = q.split()
    return INF if words and (words[0] in QUESTION_WORDS or words[0] in AUX_WORDS
                             or q.endswith("?")) else None


def lf_topical(q: str) -> Vote:
    return INF if INFO_CUES.intersection(q.split()) else None


def lf_buy(q: str) -> Vote:
    return TRANS if TRANS_CUES.intersection(q.split()) else None


def lf_long(q: str) -> Vote:
    """Five or more words read as a request for information (Ahrefs: long queries get an
    overview far more often)."""
    return INF if len(q.split()) >= 5 else None


def site_lf(sites: frozenset[str]) -> LabellingFunction:
    def lf_site(q: str) -> Vote:
        return NAV if len(q.split()) <= 4 and q.replace(" ", "") in sites else None

    return lf_site


def head_lf(head: frozenset[str]) -> LabellingFunction:
    def lf_head(q: str) -> Vote:
        return NAV if q in head else None

    return lf_head


def default_lfs(sites: frozenset[str] = frozenset(), head: frozenset[str] = frozenset()
                ) -> list[LabellingFunction]:
    return [lf_url, lf_nav_word, site_lf(sites), head_lf(head), lf_question, lf_topical,
            lf_long, lf_buy]


def votes(queries: Sequence[str], lfs: Sequence[LabellingFunction]) -> list[list[Vote]]:
    """The vote matrix: one row per query, one column per function."""
    return [[lf(q) for lf in lfs] for q in queries]


def majority_vote(row: Sequence[Vote]) -> Vote:
    counts = Counter(v for v in row if v is not None)
    if not counts:
        return None
    (best, n), *rest = counts.most_common()
    return None if rest and rest[0][1] == n else best


@dataclass(frozen=True, slots=True)
class LabelModel:
    """Per-function accuracies and vote weights (see the module docstring)."""

    accuracies: tuple[float, ...]

    @classmethod
    def fit(cls, matrix: Sequence[Sequence[Vote]], prior: float = 1.0) -> LabelModel:
        """Accuracy of function j = (agreements + prior) / (comparisons + 2 * prior), where a
        comparison is a row on which j and the majority of the other functions both voted."""
        m = len(matrix[0]) if matrix else 0
        agree = [0] * m
        seen = [0] * m
        for row in matrix:
            for j, v in enumerate(row):
                if v is None:
                    continue
                others = majority_vote([x for i, x in enumerate(row) if i != j])
                if others is None:
                    continue
                seen[j] += 1
                agree[j] += v == others
        return cls(tuple((a + prior) / (s + 2 * prior) for a, s in zip(agree, seen,
                                                                       strict=True)))

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(math.log(a / (1 - a)) for a in self.accuracies)

    def predict(self, row: Sequence[Vote]) -> Vote:
        score: dict[str, float] = {}
        for v, w in zip(row, self.weights, strict=True):
            if v is not None:
                score[v] = score.get(v, 0.0) + w
        if not score:
            return None
        best = max(score, key=score.__getitem__)
        ties = [label for label, s in score.items() if s == score[best]]
        return best if len(ties) == 1 and score[best] > 0 else None
