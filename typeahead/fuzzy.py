"""Typo tolerance on the last typed word.

As Algolia does, a word of 4 to 7 characters may carry one typo and a word of 8 or more two
(a transposition counts as one: OSA distance). Like Meilisearch we assume the first letter is
right, which keeps each search to one small bucket of the vocabulary.

The vocabulary holds, for each length L, the distinct L-character prefixes of the words of
served entries, sorted. A typed word of length m is compared with the prefixes of lengths
m-d .. m+d that start with its first letter; a close prefix is then searched like any typed
prefix. Only served entries feed the vocabulary, so a correction never reveals a query below
the privacy floor.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
from rapidfuzz import process
from rapidfuzz.distance import OSA

MIN_LEN = 4  # shorter words get no typo tolerance
TWO_TYPOS_LEN = 8
MAX_LEN = 16  # longer typed words are matched on their first 16 characters
MAX_CORRECTIONS = 8


def max_typos(length: int) -> int:
    if length < MIN_LEN:
        return 0
    return 1 if length < TWO_TYPOS_LEN else 2


@dataclass(frozen=True)
class Correction:
    prefix: str
    distance: int


@dataclass(frozen=True)
class FuzzyVocab:
    by_length: dict[int, list[str]]

    def corrections(self, word: str) -> list[Correction]:
        """Vocabulary prefixes within the allowed distance of ``word``, best first."""
        word = word[:MAX_LEN]
        d = max_typos(len(word))
        if d == 0:
            return []
        best: dict[str, int] = {}
        for length in range(len(word) - d, len(word) + d + 1):
            for cand, dist in self._close(word, length, d):
                if cand != word and dist < best.get(cand, d + 1):
                    best[cand] = dist
        ranked = sorted(best.items(), key=lambda kv: (kv[1], abs(len(kv[0]) - len(word)), kv[0]))
        return [Correction(p, dist) for p, dist in ranked[:MAX_CORRECTIONS]]

    def _close(self, word: str, length: int, d: int) -> Iterable[tuple[str, int]]:
        bucket = self.by_length.get(length)
        if not bucket:
            return []
        first = word[0]
        lo = bisect.bisect_left(bucket, first)
        hi = bisect.bisect_left(bucket, first + "\U0010ffff", lo)
        if lo == hi:
            return []
        found = process.extract(
            word, bucket[lo:hi], scorer=OSA.distance, score_cutoff=d, limit=None
        )
        return [(cand, int(dist)) for cand, dist, _ in found]

    # --- build and persistence --------------------------------------------------------------

    @classmethod
    def build(cls, words: Iterable[str]) -> FuzzyVocab:
        prefixes: dict[int, set[str]] = {}
        for w in set(words):
            for length in range(MIN_LEN - 1, min(len(w), MAX_LEN + 2) + 1):
                prefixes.setdefault(length, set()).add(w[:length])
        return cls({length: sorted(s) for length, s in prefixes.items()})

    def save(self, path: Path) -> Path:
        path.write_bytes(orjson.dumps({str(n): words for n, words in self.by_length.items()}))
        return path

    @classmethod
    def load(cls, path: Path) -> FuzzyVocab:
        raw = orjson.loads(path.read_bytes())
        return cls({int(n): words for n, words in raw.items()})
