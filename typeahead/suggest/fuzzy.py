"""Typo tolerance on the last typed word.

As Algolia does, a word of 4 to 7 characters may carry one typo and a word of 8 or more two
(a transposition counts as one: OSA distance). The typed word is an unfinished prefix, so we
match it against *prefixes* of vocabulary words, not whole words.

Candidates come from a symmetric-delete index (the SymSpell idea): every prefix of every
vocabulary word (lengths 3 to 18) is stored under a hash of itself and of each string obtained
by deleting one of its characters. A typed word within one edit of a prefix shares one of those
strings with it, so a lookup is a handful of hashes and one vectorised binary search, whatever
the vocabulary size. For two typos the typed word's two-deletes are looked up too; this finds
every pair of edits in which the vocabulary side needs at most one deletion (two extra or
substituted letters, a letter missing plus one wrong, ...), the common cases, while keeping the
index linear in the vocabulary. Every candidate is verified with the exact OSA distance.

The arrays are memory-mapped like the rest of the index. Only served entries feed the
vocabulary, so a correction never reveals a query below the privacy floor.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from rapidfuzz import process
from rapidfuzz.distance import OSA

from typeahead.mapped import StringTable, load_array, view

MIN_LEN = 4  # shorter words get no typo tolerance
TWO_TYPOS_LEN = 8
MAX_LEN = 16  # longer typed words are matched on their first 16 characters
MIN_PREFIX = MIN_LEN - 1
MAX_PREFIX = MAX_LEN + 2
MAX_CORRECTIONS = 12
# Corrections remembered per process. Typed words repeat across users (a keystroke stream is
# Zipfian), and a lookup costs tens of microseconds of hashing and verification.
CACHE_WORDS = 4096


def max_typos(length: int) -> int:
    if length < MIN_LEN:
        return 0
    return 1 if length < TWO_TYPOS_LEN else 2


def _deletes(text: str) -> set[str]:
    return {text[:i] + text[i + 1 :] for i in range(len(text))}


def _variants(word: str, d: int) -> list[str]:
    """``word``, its one-deletes and, if ``d`` is 2, its two-deletes. Repeats are harmless
    (they find the same prefixes), so no set is built."""
    n = len(word)
    ones = [word[:i] + word[i + 1 :] for i in range(n)]
    if d < 2:
        return [word, *ones]
    # Deleting position j >= i of the i-th one-delete reaches each pair of positions once.
    return [word, *ones, *[one[:j] + one[j + 1 :] for i, one in enumerate(ones)
                           for j in range(i, n - 1)]]


def _keys(texts: Iterable[str]) -> list[int]:
    """The hash key of each text, for the build and for lookups alike (a lookup hashes up to
    ~140 variants, so the formula sits in one comprehension). crc32 is stable across
    processes (unlike hash()) and cheap; collisions are harmless because every candidate is
    verified. The length byte splits most crc collisions."""
    crc32 = zlib.crc32
    raws = [t.encode("utf-8") for t in texts]
    return [(crc32(raw) << 8) | (len(raw) & 0xFF) for raw in raws]


# (vocabulary prefix, distance). A plain tuple, not a NamedTuple: remembered corrections are
# long-lived, and the cyclic GC stops tracking exact tuples of strings and ints but keeps
# walking tuple subclasses on every full collection.
Correction = tuple[str, int]


class FuzzyVocab:
    FILES = ("fuzzy.hashes.npy", "fuzzy.pids.npy", "fuzzy.prefixes.bin", "fuzzy.prefixes.off.npy")

    def __init__(self, hashes: npt.NDArray[np.uint64], pids: npt.NDArray[np.int32],
                 prefixes: StringTable) -> None:
        self.hashes = hashes
        self.pids = pids
        self.prefixes = prefixes
        self._pids = view(pids)  # slices read as Python ints, without numpy's per-call cost
        self._cached = functools.lru_cache(maxsize=CACHE_WORDS)(self._corrections)

    def corrections(self, word: str) -> tuple[Correction, ...]:
        """Vocabulary prefixes within the allowed distance of ``word``, best first."""
        return self._cached(word[:MAX_LEN])

    def cache_clear(self) -> None:
        self._cached.cache_clear()

    def _corrections(self, word: str) -> tuple[Correction, ...]:
        d = max_typos(len(word))
        if d == 0 or len(self.hashes) == 0:
            return ()
        keys = _keys(_variants(word, d))
        # Hashes are integers, so a key's right bound is the next integer's left bound: one
        # search call for both ends (a call costs more than the search itself).
        bounds = self.hashes.searchsorted(np.array(keys + [key + 1 for key in keys],
                                                   dtype=np.uint64)).tolist()
        n = len(keys)
        pids: set[int] = set()
        owners = self._pids
        for a, b in zip(bounds[:n], bounds[n:], strict=True):
            if a < b:
                pids.update(owners[a:b])
        return self._verify(word, d, pids)

    def _verify(self, word: str, d: int, pids: Iterable[int]) -> tuple[Correction, ...]:
        # The candidates' texts in one call, and their distances in one (C-level) call:
        # per-candidate Python calls cost more than the distances themselves.
        close = process.extract(word, self.prefixes.many(list(pids)), scorer=OSA.distance,
                                processor=None, limit=None, score_cutoff=d)
        n = len(word)
        found = [(dist, abs(len(cand) - n), cand) for cand, dist, _ in close if cand != word]
        found.sort()
        return tuple((c, dist) for dist, _, c in found[:MAX_CORRECTIONS])

    # --- build and persistence --------------------------------------------------------------

    @staticmethod
    def build(words: Iterable[str], directory: Path) -> list[Path]:
        prefixes = sorted({w[:n] for w in set(words)
                           for n in range(MIN_PREFIX, min(len(w), MAX_PREFIX) + 1)})
        keys: list[int] = []
        owners: list[int] = []
        for pid, p in enumerate(prefixes):
            variant_keys = _keys({p} | _deletes(p))
            keys.extend(variant_keys)
            owners.extend([pid] * len(variant_keys))
        hashes = np.array(keys, dtype=np.uint64)
        order = np.argsort(hashes, kind="stable")
        np.save(directory / "fuzzy.hashes.npy", hashes[order])
        np.save(directory / "fuzzy.pids.npy", np.array(owners, dtype=np.int32)[order])
        StringTable.write(prefixes, directory / "fuzzy.prefixes.bin",
                          directory / "fuzzy.prefixes.off.npy")
        return [directory / name for name in FuzzyVocab.FILES]

    @classmethod
    def load(cls, directory: Path) -> FuzzyVocab:
        return cls(load_array(directory / "fuzzy.hashes.npy"),
                   load_array(directory / "fuzzy.pids.npy"),
                   StringTable(directory / "fuzzy.prefixes.bin",
                               directory / "fuzzy.prefixes.off.npy"))

