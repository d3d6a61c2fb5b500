"""Generated completions: queries the log never held, built from privacy-safe pieces.

Most typed prefixes complete to a query nobody logged often enough to serve (only about a fifth
of the AOL held-out weight is in the served dictionary). For those, a completion is composed
from pieces of the log: the last typed word is completed to a word that follows the word before
it, and popular continuations are appended, scored by a bigram model of the log's queries
("harry potter and the g" -> "harry potter and the goblet of fire").

Privacy rule: every word and every adjacent word pair of a generated completion, the typed part
included, occurs in at least ``min_pieces`` (3) distinct queries of the corpus: the floor that
keeps a whole query off the index, applied to each piece, so no piece is one person's. Words the
suggestion policy blocks never enter the vocabulary, and the service screens each generated text
with the policy and the curation rules before it is shown.

Arrays (``gen.*.npy``, memory-mapped like the rest of the index):

- ``gen.words``: the vocabulary, sorted byte strings (a word's id is its position), so the words
  starting with a typed fragment are one contiguous id range;
- ``gen.total`` / ``gen.start`` / ``gen.end``: per word, the weight of the served queries that
  hold it, start with it, end with it;
- ``gen.succ_off`` / ``gen.succ`` / ``gen.succ_w``: per word, its successors (ids, ascending)
  and the weight of the served queries holding the pair: the successors starting with a
  fragment are found by two binary searches.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from typeahead.mapped import load_array, view

MIN_PIECES = 3  # distinct served queries each word and word pair must occur in
WORD_BYTES = 32  # longer words are never generated
FIRST_BEAM = 12  # completions of the typed fragment expanded further
NEXT_BEAM = 6  # continuations tried after each generated word
MAX_APPENDED = 2  # words appended after the completed one
FILES = ("words", "total", "start", "end", "succ_off", "succ", "succ_w")
_HIGH = b"\xff"


@dataclass(frozen=True)
class Generator:
    words: npt.NDArray[np.bytes_]
    total: npt.NDArray[np.float32]
    start: npt.NDArray[np.float32]
    end: npt.NDArray[np.float32]
    succ_off: npt.NDArray[np.int64]
    succ: npt.NDArray[np.int32]
    succ_w: npt.NDArray[np.float32]
    _text: list[str] = field(init=False, repr=False, compare=False)
    _start_total: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The vocabulary is small (tens of thousands of words): Python strings make the
        # per-keystroke lookups cheap, and ids index them directly.
        object.__setattr__(self, "_text", [w.decode("utf-8") for w in self.words.tolist()])
        object.__setattr__(self, "_start_total", max(float(self.start.sum()), 1e-9))
        for name in ("total", "start", "end", "succ_off"):
            object.__setattr__(self, f"_{name}_v", view(getattr(self, name)))

    def __len__(self) -> int:
        return len(self._text)

    def complete(self, key: str, complete: bool, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` generated completions of the normalised ``key`` with their log
        probabilities, best first; ``complete``: the last word is finished (a trailing space).
        Empty when a typed word or word pair is not a safe piece."""
        words = key.split(" ")
        head, fragment = (words, "") if complete else (words[:-1], words[-1])
        ids = [self._id(w) for w in head]
        if any(i < 0 for i in ids) or not self._chained(ids):
            return []
        firsts = self._firsts(ids[-1] if ids else -1, fragment)
        paths: list[tuple[float, list[int]]] = []
        for logp, word in firsts:
            self._extend(logp, [word], paths)
        paths.sort(key=lambda p: -p[0])
        prefix = " ".join(head)
        out: list[tuple[str, float]] = []
        for logp, path in paths[:k]:
            tail = " ".join(self._text[w] for w in path)
            out.append((f"{prefix} {tail}" if prefix else tail, logp))
        return out

    def _id(self, word: str) -> int:
        raw = word.encode("utf-8")
        at = int(self.words.searchsorted(raw))
        return at if at < len(self._text) and self._text[at] == word else -1

    def _successors(self, word: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
        off = self._succ_off_v  # type: ignore[attr-defined]
        lo, hi = off[word], off[word + 1]
        return self.succ[lo:hi], self.succ_w[lo:hi]

    def _chained(self, ids: list[int]) -> bool:
        """Every adjacent pair of the typed words is a safe piece."""
        for a, b in itertools.pairwise(ids):
            succ, _ = self._successors(a)
            at = int(succ.searchsorted(b))
            if at >= len(succ) or int(succ[at]) != b:
                return False
        return True

    def _range(self, fragment: str) -> tuple[int, int]:
        if not fragment:
            return 0, len(self._text)
        raw = fragment.encode("utf-8")
        if len(raw) > WORD_BYTES:
            return 0, 0
        lo, hi = self.words.searchsorted(np.array([raw, raw + _HIGH], dtype=self.words.dtype))
        return int(lo), int(hi)

    def _firsts(self, prev: int, fragment: str) -> list[tuple[float, int]]:
        """The words completing ``fragment``, after ``prev`` (-1: the query's first word)."""
        lo, hi = self._range(fragment)
        if lo == hi:
            return []
        ids: npt.NDArray[np.integer]
        if prev < 0:
            ids = np.arange(lo, hi)
            weights = self.start[lo:hi] + 0.1 * self.total[lo:hi]
            norm = self._start_total
        else:
            succ, succ_w = self._successors(prev)
            a, b = succ.searchsorted([lo, hi]).tolist()
            ids, weights = succ[a:b], succ_w[a:b]
            norm = float(self._total_v[prev])  # type: ignore[attr-defined]
        return _best(ids, weights, norm, FIRST_BEAM)

    def _extend(self, logp: float, path: list[int], out: list[tuple[float, list[int]]]) -> None:
        last = path[-1]
        total = float(self._total_v[last])  # type: ignore[attr-defined]
        end = float(self._end_v[last])  # type: ignore[attr-defined]
        if end > 0:
            out.append((logp + math.log(end / total), path))
        if len(path) > MAX_APPENDED:
            return
        succ, succ_w = self._successors(last)
        for step, word in _best(succ, succ_w, total, NEXT_BEAM):
            if word not in path:  # "new york new york ..." loops are never a query
                self._extend(logp + step, [*path, word], out)

    # --- persistence ------------------------------------------------------------------------

    def save(self, directory: Path) -> list[Path]:
        paths = []
        for name in FILES:
            path = directory / f"gen.{name}.npy"
            np.save(path, getattr(self, name))
            paths.append(path)
        return paths

    @classmethod
    def load(cls, directory: Path) -> Generator | None:
        """The index's generator; None for an index built without one."""
        if not (directory / "gen.words.npy").is_file():
            return None
        arr = {name: load_array(directory / f"gen.{name}.npy") for name in FILES}
        gen = cls(**arr)
        gen.check()
        return gen

    def check(self) -> None:
        """Types and ranges of every array a lookup indexes with (ValueError when one is off)."""
        n = len(self.words)
        if self.words.ndim != 1 or self.words.dtype != np.dtype(f"S{WORD_BYTES}"):
            raise ValueError(f"gen.words must be a 1-d S{WORD_BYTES} array")
        for name in ("total", "start", "end"):
            arr = getattr(self, name)
            if arr.dtype != np.float32 or arr.shape != (n,):
                raise ValueError(f"gen.{name} must hold {n} float32 values")
        off = self.succ_off
        if off.dtype != np.int64 or off.shape != (n + 1,) or (n and (
                int(off[0]) != 0 or int(off[-1]) != len(self.succ) or (np.diff(off) < 0).any())):
            raise ValueError("gen.succ_off must be ascending int64 offsets into gen.succ")
        if self.succ.dtype != np.int32 or self.succ_w.shape != self.succ.shape or (
                len(self.succ) and (int(self.succ.min()) < 0 or int(self.succ.max()) >= n)):
            raise ValueError(f"gen.succ must hold int32 word ids below {n}")
        if self.succ_w.dtype != np.float32:
            raise ValueError("gen.succ_w must be float32")


def _best(ids: Sequence[int] | npt.NDArray[np.integer], weights: npt.NDArray[np.float32],
          norm: float, n: int) -> list[tuple[float, int]]:
    """The ``n`` heaviest ids with log(weight / norm), heaviest first."""
    if len(ids) > n:
        top = np.argpartition(-weights, n - 1)[:n]
        ids, weights = np.asarray(ids)[top], weights[top]
    pairs = sorted(zip(weights.tolist(), np.asarray(ids).tolist(), strict=True), reverse=True)
    return [(math.log(w / norm), i) for w, i in pairs if w > 0]


def build_generator(keys: Sequence[str], weights: Sequence[float],
                    min_pieces: int = MIN_PIECES,
                    allowed: Callable[[str], bool] = lambda word: True) -> Generator:
    """The generator over distinct normalised ``keys`` with their ``weights``; words that
    ``allowed`` refuses never enter the vocabulary."""
    df: dict[str, int] = defaultdict(int)
    pair_df: dict[tuple[str, str], int] = defaultdict(int)
    for key in keys:
        words = key.split(" ")
        for w in set(words):
            df[w] += 1
        for pair in set(itertools.pairwise(words)):
            pair_df[pair] += 1
    vocab = sorted(w for w, n in df.items()
                   if n >= min_pieces and len(w.encode("utf-8")) <= WORD_BYTES and allowed(w))
    ids = {w: i for i, w in enumerate(vocab)}
    stats = np.zeros((3, len(vocab)), dtype=np.float64)
    pairs: dict[tuple[int, int], float] = defaultdict(float)
    for key, weight in zip(keys, weights, strict=True):
        _count(key.split(" "), float(weight), ids, stats, pairs, pair_df, min_pieces)
    return _assemble(vocab, stats, pairs)


def _count(words: list[str], weight: float, ids: dict[str, int], stats: np.ndarray,
           pairs: dict[tuple[int, int], float], pair_df: dict[tuple[str, str], int],
           min_pieces: int) -> None:
    for w in set(words):
        if w in ids:
            stats[0, ids[w]] += weight
    if words[0] in ids:
        stats[1, ids[words[0]]] += weight
    if words[-1] in ids:
        stats[2, ids[words[-1]]] += weight
    for a, b in set(itertools.pairwise(words)):
        if a in ids and b in ids and pair_df[(a, b)] >= min_pieces:
            pairs[(ids[a], ids[b])] += weight


def _assemble(vocab: list[str], stats: np.ndarray, pairs: dict[tuple[int, int], float]
              ) -> Generator:
    ordered = sorted(pairs.items())
    succ = np.array([b for (_, b), _ in ordered], dtype=np.int32)
    succ_w = np.array([w for _, w in ordered], dtype=np.float32)
    counts = np.bincount(np.array([a for (a, _), _ in ordered], dtype=np.int64),
                         minlength=len(vocab))
    succ_off = np.zeros(len(vocab) + 1, dtype=np.int64)
    np.cumsum(counts, out=succ_off[1:])
    words = np.array([w.encode("utf-8") for w in vocab], dtype=f"S{WORD_BYTES}")
    total, start, end = (stats[i].astype(np.float32) for i in range(3))
    return Generator(words, total, start, end, succ_off, succ, succ_w)
