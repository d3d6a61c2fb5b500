"""The lexical engine: prefix, any-order word and typo-tolerant completion. Pure: no I/O.

Ranking tiers, best first (the ``score`` is ``(tier + popularity) / 3``, so it falls in [0, 1]
and never increases down the list):

2. ``prefix``: the whole normalised input is a prefix of the completion ("new yo" ->
   "new york").
1. ``prefix`` (word match): every typed word is a prefix of a distinct word of the completion, in
   any order ("york new", "times" -> "new york times").
0. ``fuzzy``: as above after correcting the last typed word within its typo allowance.

Within a tier, popularity decides (``log1p(weight)`` scaled to [0, 1)). Entry ids are
popularity ranks, so "most popular" means "smallest id".
"""

from __future__ import annotations

import array
import bisect
import functools
import itertools
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

from typeahead.mapped import StringTable, view
from typeahead.normalize import fold_char, fold_punctuation, normalize
from typeahead.suggest.fuzzy import FuzzyVocab
from typeahead.suggest.prefix import KEY_BYTES, TOP_K, PrefixArray

_THIRD = 1 / 3
IN_ORDER = 2 / 3  # the in-order prefix tier's score floor: (2 + popularity) / 3
WORD_SCAN_LIMIT = 256  # ranges up to this size are scanned whole for any-order matches
POOL_CACHE = 2048  # candidate pools remembered per engine (about 11 MB at 365k entries)
SCAN_CHUNK = 32  # candidate keys read per call while scanning
Span = tuple[int, int]


class Suggestion(NamedTuple):
    id: int
    text: str
    score: float
    source: str
    spans: tuple[Span, ...]


# A candidate before its text is fetched (score, source, spans): only the final top k are
# materialised. A plain tuple: this is built for every candidate on the hot path.
_Hit = tuple[float, str, tuple[Span, ...]]

# A remembered candidate pool: (entries, starts, blob), where blob is " " + each key, joined,
# and key i is blob[starts[i] + 1 : starts[i + 1]]. Plain tuples of ints and one str, so the
# cyclic GC stops tracking remembered pools.
_Pool = tuple[tuple[int, ...], tuple[int, ...], str]


@dataclass(frozen=True)
class LexicalData:
    display: StringTable
    keys: StringTable
    weights: npt.NDArray[np.float64]
    popularity: npt.NDArray[np.float32]  # log1p(weight) / log1p(top weight), in [0, 1)
    prefixes: PrefixArray  # whole keys
    words: PrefixArray  # every word-start suffix of every key
    vocab: FuzzyVocab
    # Corpus-level key options (build-index): punctuation folded in keys and input, and keys
    # without their leading article also in ``prefixes`` ("hunger" -> "The Hunger Games").
    fold: bool = False
    articles: bool = False


# A range's top list less the removed ids, in compact arrays: the kept ids; the removed ids;
# for each kept id, how many removed ids come before it.
Refilled: TypeAlias = "tuple[array.array[int], array.array[int], array.array[int]]"
RANGES_MAX = 200_000  # ranges whose refilled top list an overlay keeps


class Blocked:
    """Entry ids the tiers pass over while they collect their top k (``ids``: none here; the
    curation overlay's ``Removals`` holds the blocked ones), and ``met``, those a request
    passed over on the way to what it shows, so each is counted once however many tiers met
    it. The tiers test ``ids`` directly: a set look-up, not a method call, per candidate.
    ``ranges`` holds the key ranges' top lists less the blocked ids (``blocked_ranges``,
    worked out when the rules change)."""

    __slots__ = ("_answers", "_ranges", "ids", "met")

    def __init__(self, ids: frozenset[int] = frozenset(),
                 ranges: dict[tuple[int, int], Refilled] | None = None) -> None:
        self.ids = ids
        self.met: set[int] = set()
        self._ranges = {} if ranges is None else ranges
        self._answers: dict[tuple[int, int, int], tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def refill(self, k: int, prefixes: PrefixArray, lo: int, hi: int) -> list[int]:
        """The top ``k`` of the range [lo, hi) of ``prefixes`` that are not blocked. Each
        range's answer for each k is remembered as two tuples: later keystrokes copy one and
        count the other (a few cache lines, where reading on touches more)."""
        got = self._answers.get((lo, hi, k))
        if got is None:
            got = self._answer(k, prefixes, lo, hi)
        if got[1]:
            self.met.update(got[1])
        return list(got[0])

    def _answer(self, k: int, prefixes: PrefixArray, lo: int, hi: int
                ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        refilled = self._ranges.get((lo, hi))
        if refilled is None:  # a range the rule change did not foresee (a key over 32 bytes)
            refilled = _refill(prefixes, lo, hi, self.ids)
            if len(self._ranges) < RANGES_MAX:
                self._ranges[lo, hi] = refilled
        kept, removed, before = refilled
        # Only the removed entries before the k-th kept one were passed over.
        got = (tuple(kept), tuple(removed)) if len(kept) < k else \
            (tuple(kept[:k]), tuple(removed[: before[k - 1]]))
        if len(self._answers) < RANGES_MAX:
            self._answers[lo, hi, k] = got
        return got

    def report(self) -> None:
        """Count the entries met (the curation overlay's ``Removals`` does); none here."""


def _refill(prefixes: PrefixArray, lo: int, hi: int, removed: frozenset[int]) -> Refilled:
    kept, passed, before = array.array("i"), array.array("i"), array.array("i")
    for entry in prefixes.top(lo, hi, TOP_K):
        if entry in removed:
            passed.append(entry)
        else:
            kept.append(entry)
            before.append(len(passed))
    return kept, passed, before


def blocked_ranges(prefixes: PrefixArray, removed: frozenset[int]
                   ) -> dict[tuple[int, int], Refilled]:
    """The top list of every key range that holds a ``removed`` entry, less the removed
    ones: the ranges of each prefix of each removed entry's keys. Worked out once per rule
    change (off the event loop: no shared search buffers), so a keystroke whose range holds
    a blocked entry looks its top k up instead of reading further down the range."""
    if not removed:
        return {}
    at = np.flatnonzero(np.isin(prefixes.ids, np.fromiter(removed, dtype=np.int64)))
    heads: set[bytes] = set()
    for key in prefixes.keys[at].tolist():
        heads.update(key[:n] for n in range(1, len(key) + 1))
    ranges: dict[tuple[int, int], Refilled] = {}
    for span in set(prefixes.spans_batch(sorted(heads))):
        if len(ranges) >= RANGES_MAX:
            break  # the rest are refilled when first met
        ranges[span] = _refill(prefixes, *span, removed)
    return ranges


NOTHING_BLOCKED = Blocked()


class LexicalEngine:
    def __init__(self, data: LexicalData) -> None:
        self.data = data
        self._pop = view(data.popularity)
        # While a user types "new york ti", "tim", "time", ... the words before the last stay
        # the same, and the typo tier scans their candidate pool once per correction: the
        # pools are remembered (74% hits on AOL keystroke sessions).
        self._pools = functools.lru_cache(maxsize=POOL_CACHE)(self._build_pool)
        self._plain = not (data.fold or data.articles)

    def __len__(self) -> int:
        return len(self.data.display)

    def clear_caches(self) -> None:
        """Forget remembered candidate pools and corrections (benchmarks measure cold tiers)."""
        self._pools.cache_clear()
        self.data.vocab.cache_clear()

    def key(self, query: str) -> str:
        """The matching key of ``query`` under this index's key options."""
        key = normalize(query)
        return fold_punctuation(key) if self.data.fold else key

    def suggest(self, query: str, k: int, *, fallback: bool = True,
                blocked: Blocked = NOTHING_BLOCKED) -> list[Suggestion]:
        """Top ``k`` completions; ``fallback=False`` stops after the in-order prefix tier.

        Entries in ``blocked`` (the curation overlay's removals) are passed over while each
        tier collects its top ``k``, so the ones after them move up in the same search."""
        found = self._suggest(query, k, fallback, blocked)
        if self._plain or not found:
            return found
        return self._respan(self.key(query).split(" "), found)

    def _respan(self, typed: list[str], found: list[Suggestion]) -> list[Suggestion]:
        """Spans found on the entry's own key: an article or folded punctuation shifts them."""
        keys = self.data.keys.many([s.id for s in found])
        out = []
        for s, key in zip(found, keys, strict=True):
            spans = match_words([t for t in typed if t], key)
            if spans is not None:
                s = s._replace(spans=map_spans(spans, s.text, fold=self.data.fold))
            out.append(s)
        return out

    def _suggest(self, query: str, k: int, fallback: bool, blocked: Blocked
                 ) -> list[Suggestion]:
        key = self.key(query)
        if not key:
            return []
        # A trailing space means the last word is complete: "new " should not offer "newark".
        complete = query[-1].isspace()
        prefix = key + " " if complete else key
        raw = prefix.encode("utf-8")
        span = self.data.prefixes.span(raw)  # searched once, for the fast path and the tiers
        fast = self._prefix_only(prefix, span, k, blocked) if len(raw) <= KEY_BYTES else None
        if fast is not None:
            return fast
        found = self._exact(prefix, span, k, tier=2, blocked=blocked)
        if not fallback or len(found) >= k:
            # The prefix tier inserts by popularity, so ``found`` is already in rank order.
            return self.materialise(found, k, ranked=True)
        words = key.split(" ")
        if len(found) < k:
            self._any_order(words, k, found, tier=1, blocked=blocked)
        if len(found) < k and not complete:
            self._fuzzy(words, k, found, blocked)
        return self.materialise(found, k)

    def _prefix_only(self, key: str, span: tuple[int, int], k: int, blocked: Blocked
                     ) -> list[Suggestion] | None:
        """The common case, built directly: the prefix tier alone fills all k slots."""
        lo, hi = span
        if hi - lo < k:
            return None
        ids = self._top(lo, hi, k, blocked)
        if len(ids) < k:
            return None
        spans = ((0, len(key)),)
        pop = self._pop
        make = tuple.__new__  # NamedTuple's own __new__ is a Python-level wrapper: skip it
        return [
            make(Suggestion, (entry, text, IN_ORDER + pop[entry] * _THIRD, "prefix",
                              spans if text.isascii() else map_spans(spans, text)))
            for entry, text in zip(ids, self.data.display.many(ids), strict=True)
        ]

    def materialise(self, found: dict[int, _Hit], k: int, *, ranked: bool = False
                    ) -> list[Suggestion]:
        items = list(found.items())
        best = items[:k] if ranked else sorted(items, key=lambda item: -item[1][0])[:k]
        if not best:
            return []
        texts = self.data.display.many([entry for entry, _ in best])
        make = tuple.__new__  # NamedTuple's own __new__ is a Python-level wrapper: skip it
        return [
            make(Suggestion, (entry, text, score, source,
                              spans if text.isascii() else map_spans(spans, text)))
            for (entry, (score, source, spans)), text in zip(best, texts, strict=True)
        ]

    # --- tiers ------------------------------------------------------------------------------

    def _top(self, lo: int, hi: int, k: int, blocked: Blocked) -> list[int]:
        """The ``k`` most popular entries in [lo, hi) outside ``blocked``: when blocks remove
        some, the range's precomputed top list holds the next ones (a look-up, not a second
        search)."""
        ids = self.data.prefixes.top(lo, hi, k)
        if blocked.ids.isdisjoint(ids):
            return ids
        return blocked.refill(k, self.data.prefixes, lo, hi)

    def _exact(self, key: str, span: tuple[int, int], k: int, *, tier: int,
               source: str = "prefix", dist: int = 0, skip: Container[int] = (),
               blocked: Blocked = NOTHING_BLOCKED) -> dict[int, _Hit]:
        """The top ``k`` in-order prefix matches of ``key`` (``span``: its key range) outside
        ``blocked``, less those in ``skip`` (already found), best first."""
        lo, hi = span
        if lo == hi:
            return {}
        entries = self._top(lo, hi, k, blocked)
        if skip:
            entries = [e for e in entries if e not in skip]
        if len(key.encode("utf-8")) > KEY_BYTES:  # keys are indexed on 32 bytes: check the rest
            entries = [e for e in entries if self.data.keys[e].startswith(key)]
        spans = ((0, len(key)),)
        pop = self._pop
        base, scale = tier / 3, 1 / (3 * (1 + dist))
        return {entry: (base + pop[entry] * scale, source, spans) for entry in entries}

    def _any_order(self, words: list[str], k: int, found: dict[int, _Hit], *, tier: int,
                   blocked: Blocked = NOTHING_BLOCKED) -> None:
        """Entries whose words each start with a distinct typed word, scanned lazily from
        ``words`` so the scan stops as soon as k entries match."""
        removed = blocked.ids
        for entry, key in self._scan(words):
            if entry in found:
                continue
            if entry in removed:
                blocked.met.add(entry)
                continue
            matched = match_words(words, key)
            if matched is not None:
                found[entry] = self._hit(entry, tier, "prefix", matched, 0)
                if len(found) >= k:
                    return

    def _any_order_pooled(self, words: list[str], k: int, found: dict[int, _Hit], *,
                          dist: int, skip: Container[int], pool: _Pool,
                          blocked: Blocked = NOTHING_BLOCKED) -> None:
        """The fuzzy tier's ``_any_order`` over a remembered pool (see ``_pool``): only the
        pool's keys holding a word that starts with the last typed word are matched, and
        ``str.find`` on the pool's joined keys finds them without a Python loop per key."""
        entries, starts, blob = pool
        needle = " " + words[-1]
        removed = blocked.ids
        pos = blob.find(needle)
        while pos >= 0:
            i = bisect.bisect_right(starts, pos) - 1
            entry = entries[i]
            if entry in removed:
                blocked.met.add(entry)
            elif entry not in found and entry not in skip:
                matched = match_words(words, blob[starts[i] + 1 : starts[i + 1]])
                if matched is not None:
                    found[entry] = self._hit(entry, 0, "fuzzy", matched, dist)
                    if len(found) >= k:
                        return
            pos = blob.find(needle, starts[i + 1])  # on to the next key

    def _pool(self, words: list[str]) -> _Pool:
        """Every candidate of ``_scan``, remembered: for pools that are scanned again (the
        fuzzy tier's words before the last, once per correction and keystroke)."""
        return self._pools(tuple(words))

    def _build_pool(self, words: tuple[str, ...]) -> _Pool:
        entries: list[int] = []
        keys: list[str] = []
        for entry, key in self._scan(words):
            entries.append(entry)
            keys.append(key)
        # " key0 key1 ...": a typed word (no spaces) found there lies within one key.
        blob = "".join([" " + key for key in keys])
        starts = tuple(itertools.accumulate((1 + len(key) for key in keys), initial=0))
        return tuple(entries), starts, blob

    def _scan(self, words: Sequence[str]) -> Iterator[tuple[int, str]]:
        """Candidates (entry, key) that contain a word starting with each of ``words``, drawn
        from the typed word with the fewest matching entries, by popularity."""
        spans = self.data.words.spans([w.encode("utf-8") for w in words])
        sizes = [hi - lo for lo, hi in spans]
        if 0 in sizes:
            return
        rarest = sizes.index(min(sizes))  # the first of the rarest, as ties go
        # Every candidate has a word starting with the rarest typed word: check the others.
        # A typed word that starts another ("my m": "m") needs a key word for each of them,
        # so the cheap reject counts: otherwise every "my ..." key passes for "m".
        needles = [(" " + w, sum(t.startswith(w) for t in words))
                   for i, w in enumerate(words) if i != rarest]
        ids = self.data.words.candidates(*spans[rarest], WORD_SCAN_LIMIT)
        many = self.data.keys.many
        # Keys are read a chunk at a time: one call per chunk, yet a scan that stops early
        # (k matches found) does not read every candidate.
        for start in range(0, len(ids), SCAN_CHUNK):
            chunk = ids[start : start + SCAN_CHUNK]
            if not needles:  # a lone typed word: every candidate qualifies
                yield from zip(chunk, many(chunk), strict=True)
                continue
            for entry, key in zip(chunk, many(chunk), strict=True):
                padded = " " + key  # " " + word occurs once per key word it starts
                for needle, need in needles:  # a loop, not all(): no generator per key
                    if padded.count(needle) < need:
                        break
                else:
                    yield entry, key

    def _fuzzy(self, words: list[str], k: int, found: dict[int, _Hit],
               blocked: Blocked = NOTHING_BLOCKED) -> None:
        # Every correction contributes, then popularity (discounted by distance) decides:
        # stopping at the first correction that fills k would let a rare spelling win.
        corrections = self.data.vocab.corrections(words[-1])
        if not corrections:
            return
        fuzzy: dict[int, _Hit] = {}
        head = words[:-1]
        # The words before the last are the same for every correction: filter once.
        shared = self._pool(head) if head else None
        keys = [" ".join([*head, prefix]) for prefix, _ in corrections]
        spans = self.data.prefixes.spans([key.encode("utf-8") for key in keys])
        for (prefix, dist), key, span in zip(corrections, keys, spans, strict=True):
            if span[0] == span[1] and shared is None:
                continue  # no completion of this correction (common: most are rare)
            batch = self._exact(key, span, k, tier=0, source="fuzzy", dist=dist, skip=found,
                                blocked=blocked)
            if shared is not None:  # a lone word already had its word-start matches above
                self._any_order_pooled([*head, prefix], k, batch, dist=dist, skip=found,
                                       pool=shared, blocked=blocked)
            for entry, hit in batch.items():
                if entry not in fuzzy or fuzzy[entry][0] < hit[0]:
                    fuzzy[entry] = hit
        for entry, hit in sorted(fuzzy.items(), key=lambda item: -item[1][0])[: k - len(found)]:
            found[entry] = hit

    def _hit(self, entry: int, tier: int, source: str, spans: tuple[Span, ...], dist: int) -> _Hit:
        pop = self._pop[entry] / (1 + dist)
        return ((tier + pop) / 3, source, spans)


def match_words(typed: list[str], key: str) -> tuple[Span, ...] | None:
    """Spans (in ``key``) where each typed word prefixes a distinct word, or None.

    Typed words hold no spaces, so " " + word occurs in " " + key exactly where a word of the
    key starts with it: ``str.find`` walks the word starts in C instead of a Python loop."""
    padded = " " + key
    if len(typed) == 1:  # the common case: the first word it prefixes
        pos = padded.find(" " + typed[0])
        return None if pos < 0 else ((pos, pos + len(typed[0])),)
    used: list[int] = []
    spans: list[Span] = []
    # Longest typed words first, so a short word cannot steal the only word a long one fits.
    for t in sorted(typed, key=len, reverse=True):
        needle = " " + t
        pos = padded.find(needle)
        while pos in used:  # the first word it prefixes not taken by an earlier typed word
            pos = padded.find(needle, pos + 1)
        if pos < 0:
            return None
        used.append(pos)
        spans.append((pos, pos + len(t)))
    return tuple(sorted(spans))


def map_spans(spans: tuple[Span, ...], text: str, *, fold: bool = False) -> tuple[Span, ...]:
    """Translate spans on the normalised key to spans on the display text."""
    if text.isascii() and not fold:  # display forms are whitespace-collapsed: key = lower()
        return spans
    index = _key_to_text_index(text, fold)
    last = len(text)
    return tuple(
        (index[a] if a < len(index) else last, index[b] if b < len(index) else last)
        for a, b in spans
    )


def _key_to_text_index(text: str, fold: bool = False) -> list[int]:
    """index[i] = position in ``text`` of the character that produced key character i."""
    index: list[int] = []
    prev_space = True
    for pos, ch in enumerate(text):
        piece = normalize(ch) if not ch.isspace() else " "
        if fold:
            piece = fold_char(piece)
        if piece == " ":
            if prev_space:
                continue
            prev_space = True
        elif piece:
            prev_space = False
        index.extend([pos] * len(piece))
    index.append(len(text))
    return index
