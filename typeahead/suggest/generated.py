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

import bisect
import functools
import heapq
import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from typeahead.mapped import load_array, view

MIN_PIECES = 3  # distinct queries each word and word pair must occur in
WORD_BYTES = 32  # longer words are never generated
FIRST_BEAM = 6  # completions of the typed fragment kept, and paths kept at each length
NEXT_BEAM = 4  # continuations tried after each generated word
MAX_APPENDED = 2  # words appended after the completed one
CACHE = 8192  # fragments' completions remembered
SMALL = 64  # candidate ranges up to this size are ranked in Python, larger ones in numpy
FILES = ("words", "total", "start", "end", "succ_off", "succ", "succ_w", "stop", "next",
         "next_lp", "endings", "endings_lp")
ENDINGS = 8  # likeliest query endings kept per word
_LAST = "\U0010ffff"  # sorts after every character a word may continue with


class Completer(Protocol):
    """What the service asks of a generator: this module's n-gram ``Generator`` or the
    character model's (``typeahead.suggest.charlm``)."""

    def complete(self, key: str, complete: bool, k: int) -> Iterator[tuple[str, float]]: ...

    def clear_caches(self) -> None: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class Generator:
    words: npt.NDArray[np.bytes_]
    total: npt.NDArray[np.float32]
    start: npt.NDArray[np.float32]
    end: npt.NDArray[np.float32]
    succ_off: npt.NDArray[np.int64]
    succ: npt.NDArray[np.int32]
    succ_w: npt.NDArray[np.float32]
    stop: npt.NDArray[np.float32]  # log P(a query ends | word); -inf: never
    next: npt.NDArray[np.int32]  # (words, NEXT_BEAM): the likeliest next words; -1: none
    next_lp: npt.NDArray[np.float32]  # their log P(next | word)
    # (words, ENDINGS, 1 + MAX_APPENDED): the likeliest ways a query goes on from a word to its
    # end, as word ids (-1 pads), with their log probabilities (-inf: none)
    endings: npt.NDArray[np.int32]
    endings_lp: npt.NDArray[np.float32]
    _text: list[str] = field(init=False, repr=False, compare=False)
    _start_total: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not len(self.words):
            raise ValueError("a generator needs at least one word")
        # The vocabulary is small (tens of thousands of words): Python strings make the
        # per-keystroke lookups cheap, and ids index them directly.
        object.__setattr__(self, "_text", [w.decode("utf-8") for w in self.words.tolist()])
        object.__setattr__(self, "_ids", {w: i for i, w in enumerate(self._text)})
        firsts = np.repeat(np.arange(len(self._text), dtype=np.int64), np.diff(self.succ_off))
        object.__setattr__(self, "_pairs", frozenset(
            (firsts * len(self._text) + self.succ).tolist()))
        object.__setattr__(self, "_start_total", max(float(self.start.sum()), 1e-9))
        for name in ("total", "start", "succ_off", "succ", "succ_w", "stop", "next", "next_lp",
                     "endings", "endings_lp"):
            object.__setattr__(self, f"_{name}_v", view(getattr(self, name)))
        # Keystrokes repeat words and fragments: their completions are remembered.
        object.__setattr__(self, "_first", functools.lru_cache(CACHE)(self._first_uncached))

    def __len__(self) -> int:
        return len(self._text)

    def clear_caches(self) -> None:
        """Forget the fragments' completions (benchmarks time cache-missing keystrokes)."""
        self._first.cache_clear()  # type: ignore[attr-defined]

    def complete(self, key: str, complete: bool, k: int) -> Iterator[tuple[str, float]]:
        """Up to ``k`` generated completions of the normalised ``key`` with their log
        probabilities, best first, each text built as it is taken; ``complete``: the last word
        is finished (a trailing space). None when a typed word or word pair is not a safe
        piece."""
        words = key.split(" ")
        head, fragment = (words, "") if complete else (words[:-1], words[-1])
        ids = [self._id(w) for w in head]
        if any(i < 0 for i in ids) or not self._chained(ids):
            return iter(())
        firsts = self._first(ids[-1] if ids else -1, fragment)  # type: ignore[attr-defined]
        # Each completed word's likeliest endings were found at build time; ranked together.
        lps = self._endings_lp_v  # type: ignore[attr-defined]
        ranked = heapq.nlargest(k, [(logp + lps[at], at) for logp, word in firsts
                                    for at in range(word * ENDINGS, (word + 1) * ENDINGS)
                                    if lps[at] != -math.inf])
        prefix = " ".join(head) + " " if head else ""
        return ((prefix + self._ending(at), logp) for logp, at in ranked)

    def _ending(self, at: int) -> str:
        width = 1 + MAX_APPENDED
        ids = self._endings_v[at * width : (at + 1) * width].tolist()  # type: ignore[attr-defined]
        return " ".join([self._text[w] for w in ids if w >= 0])

    def _id(self, word: str) -> int:
        return self._ids.get(word, -1)  # type: ignore[attr-defined]

    def _chained(self, ids: list[int]) -> bool:
        """Every adjacent pair of the typed words is a safe piece."""
        n, pairs = len(self._text), self._pairs  # type: ignore[attr-defined]
        return all(a * n + b in pairs for a, b in itertools.pairwise(ids))

    def _first_uncached(self, prev: int, fragment: str) -> list[tuple[float, int]]:
        """The words completing ``fragment``, after ``prev`` (-1: the query's first word)."""
        if prev >= 0 and not fragment:  # the likeliest next words were ranked at build time
            return self._next(prev)[1]
        text = self._text
        # Sorted by UTF-8 bytes, which is code point order: bisect on the strings.
        lo = bisect.bisect_left(text, fragment)
        hi = bisect.bisect_left(text, fragment + _LAST, lo) if fragment else len(text)
        if lo == hi:
            return []
        if prev < 0:
            if hi - lo > SMALL:
                return _best(np.arange(lo, hi), self.start[lo:hi] + 0.1 * self.total[lo:hi],
                             self._start_total, FIRST_BEAM)
            start, total = self._start_v, self._total_v  # type: ignore[attr-defined]
            return _top(range(lo, hi), [start[i] + 0.1 * total[i] for i in range(lo, hi)],
                        self._start_total, FIRST_BEAM)
        off, succ = self._succ_off_v, self._succ_v  # type: ignore[attr-defined]
        a = bisect.bisect_left(succ, lo, off[prev], off[prev + 1])
        b = bisect.bisect_left(succ, hi, a, off[prev + 1])
        norm = float(self._total_v[prev])  # type: ignore[attr-defined]
        if b - a > SMALL:
            return _best(self.succ[a:b], self.succ_w[a:b], norm, FIRST_BEAM)
        return _top(succ[a:b].tolist(), self._succ_w_v[a:b].tolist(), norm,  # type: ignore[attr-defined]
                    FIRST_BEAM)

    def _paths(self, firsts: list[tuple[float, int]]) -> list[tuple[float, tuple[int, ...]]]:
        """Completed paths, best first: a beam of ``FIRST_BEAM`` paths grows one word at a
        time, and each path may end where a query may end."""
        done: list[tuple[float, tuple[int, ...]]] = []
        beam: list[tuple[float, tuple[int, ...]]] = [(logp, (word,)) for logp, word in firsts]
        for depth in range(MAX_APPENDED + 1):
            grown: list[tuple[float, tuple[int, ...]]] = []
            for logp, path in beam:
                stop, nexts = self._next(path[-1])
                if stop is not None:
                    done.append((logp + stop, path))
                if depth < MAX_APPENDED:
                    # "new york new york ..." loops are never a query
                    grown += [(logp + step, (*path, word)) for step, word in nexts
                              if word not in path]
            if not grown:
                break
            beam = heapq.nlargest(FIRST_BEAM, grown)
        done.sort(key=lambda p: -p[0])
        return done

    def _next(self, word: int) -> tuple[float | None, list[tuple[float, int]]]:
        """log P(the query ends | word) (None: never), and the likeliest next words."""
        stop: float = self._stop_v[word]  # type: ignore[attr-defined]
        nxt, lps = self._next_v, self._next_lp_v  # type: ignore[attr-defined]
        at = word * NEXT_BEAM
        pairs = [(lps[i], nxt[i]) for i in range(at, at + NEXT_BEAM) if nxt[i] >= 0]
        return (None if stop == -math.inf else stop), pairs

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
        if self.stop.dtype != np.float32 or self.stop.shape != (n,):
            raise ValueError(f"gen.stop must hold {n} float32 values")
        if self.next.dtype != np.int32 or self.next.shape != (n, NEXT_BEAM) or (
                n and (int(self.next.min()) < -1 or int(self.next.max()) >= n)):
            raise ValueError(f"gen.next must be ({n}, {NEXT_BEAM}) int32 word ids or -1")
        if self.next_lp.dtype != np.float32 or self.next_lp.shape != (n, NEXT_BEAM):
            raise ValueError(f"gen.next_lp must be ({n}, {NEXT_BEAM}) float32")
        shape = (n, ENDINGS, 1 + MAX_APPENDED)
        if self.endings.dtype != np.int32 or self.endings.shape != shape or (
                n and (int(self.endings.min()) < -1 or int(self.endings.max()) >= n)):
            raise ValueError(f"gen.endings must be {shape} int32 word ids or -1")
        if self.endings_lp.dtype != np.float32 or self.endings_lp.shape != (n, ENDINGS):
            raise ValueError(f"gen.endings_lp must be ({n}, {ENDINGS}) float32")


def _best(ids: Sequence[int] | npt.NDArray[np.integer], weights: npt.NDArray[np.float32],
          norm: float, n: int) -> list[tuple[float, int]]:
    """The ``n`` heaviest ids with log(weight / norm), heaviest first."""
    if len(ids) > n:
        top = np.argpartition(-weights, n - 1)[:n]
        ids, weights = np.asarray(ids)[top], weights[top]
    pairs = sorted(zip(weights.tolist(), np.asarray(ids).tolist(), strict=True), reverse=True)
    return [(math.log(w / norm), i) for w, i in pairs if w > 0]


def _top(ids: Sequence[int], weights: Sequence[float], norm: float, n: int
         ) -> list[tuple[float, int]]:
    """``_best`` for short Python sequences."""
    pairs = heapq.nlargest(n, zip(weights, ids, strict=True))
    return [(math.log(w / norm), i) for w, i in pairs if w > 0]


def build_generator(keys: Sequence[str], weights: Sequence[float],
                    min_pieces: int = MIN_PIECES,
                    allowed: Callable[[str], bool] = lambda word: True) -> Generator | None:
    """The generator over distinct normalised ``keys`` with their ``weights``; words that
    ``allowed`` refuses never enter the vocabulary, nor endings it refuses the ranked endings.
    None when no word is a safe piece."""
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
    return _assemble(vocab, stats, pairs, allowed) if vocab else None


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


def _assemble(vocab: list[str], stats: np.ndarray, pairs: dict[tuple[int, int], float],
              allowed: Callable[[str], bool] = lambda text: True
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
    with np.errstate(divide="ignore"):
        stop = np.where(end > 0, np.log(end / np.maximum(total, 1e-9)), -np.inf)
    nxt = np.full((len(vocab), NEXT_BEAM), -1, dtype=np.int32)
    next_lp = np.zeros((len(vocab), NEXT_BEAM), dtype=np.float32)
    for word in np.flatnonzero(counts).tolist():
        lo, hi = int(succ_off[word]), int(succ_off[word + 1])
        best = _best(succ[lo:hi], succ_w[lo:hi], float(total[word]), NEXT_BEAM)
        for j, (lp, b) in enumerate(best):
            nxt[word, j], next_lp[word, j] = b, lp
    n = len(vocab)
    endings = np.full((n, ENDINGS, 1 + MAX_APPENDED), -1, dtype=np.int32)
    endings_lp = np.full((n, ENDINGS), -np.inf, dtype=np.float32)
    base = Generator(words, total, start, end, succ_off, succ, succ_w, stop.astype(np.float32),
                     nxt, next_lp, endings.copy(), endings_lp.copy())
    for word in range(n):
        # Endings ``allowed`` refuses are dropped here; the whole text is screened again when
        # it is served, since the typed words can change the verdict.
        kept = [(logp, path) for logp, path in base._paths([(0.0, word)])[:2 * ENDINGS]
                if allowed(" ".join([vocab[w] for w in path]))]
        for e, (logp, path) in enumerate(kept[:ENDINGS]):
            endings[word, e, : len(path)] = path
            endings_lp[word, e] = logp
    return Generator(words, total, start, end, succ_off, succ, succ_w, stop.astype(np.float32),
                     nxt, next_lp, endings, endings_lp)
