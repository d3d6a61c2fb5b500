"""Sorted-key prefix search with precomputed top-k for heavy prefixes.

A ``PrefixArray`` holds byte keys (UTF-8 of normalised text, truncated to ``KEY_BYTES``) sorted,
each pointing at an entry id. Entry ids are popularity ranks (0 is the most popular), so the
best completions of a prefix are the smallest ids in its key range. A prefix maps to a contiguous
range by binary search; ranges larger than ``SMALL_RANGE`` have their top ``TOP_K`` ids
precomputed at build time (they are exactly the LCP intervals of the sorted keys), so a lookup is
two binary searches plus one dict probe however many entries share the prefix.

Everything is stored as ``.npy`` files opened with ``mmap_mode="r"`` so worker processes share
one copy through the page cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from typeahead.mapped import load_array, view

KEY_BYTES = 32  # longer prefixes are range-searched on their first 32 bytes, then verified
SMALL_RANGE = 64  # ranges up to this size are ranked at query time
TOP_K = 64  # ids kept per heavy range (>= the API's max k of 50)
_HIGH = b"\xff"  # sorts after every UTF-8 byte sequence

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class PrefixArray:
    keys: npt.NDArray[np.bytes_]
    ids: npt.NDArray[np.int32]
    node_index: dict[int, int]
    topk_off: npt.NDArray[np.int64]
    topk: npt.NDArray[np.int32]
    _ids_view: memoryview = field(init=False, repr=False, compare=False)
    _topk_view: memoryview = field(init=False, repr=False, compare=False)
    _topk_off_view: memoryview = field(init=False, repr=False, compare=False)
    # Reused search buffer: building a fresh 2-element array per call costs more than the
    # binary search. Safe because an engine is only used from its event loop's thread.
    _probe: npt.NDArray[np.bytes_] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Element-wise reads on the hot path go through memoryviews (see mapped.view).
        object.__setattr__(self, "_ids_view", view(self.ids))
        object.__setattr__(self, "_topk_view", view(self.topk))
        object.__setattr__(self, "_topk_off_view", view(self.topk_off))
        object.__setattr__(self, "_probe", np.empty(2, dtype=f"S{KEY_BYTES}"))

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def span(self, prefix: bytes) -> tuple[int, int]:
        """Range [lo, hi) of keys starting with ``prefix`` (on its first KEY_BYTES bytes)."""
        if len(prefix) >= KEY_BYTES:
            p = prefix[:KEY_BYTES]
            lo = self.keys.searchsorted(p, side="left")
            return int(lo), int(self.keys.searchsorted(p, side="right"))
        probe = self._probe
        probe[0] = prefix
        probe[1] = prefix + _HIGH
        lo, hi = self.keys.searchsorted(probe).tolist()
        return lo, hi

    def spans(self, prefixes: list[bytes]) -> list[tuple[int, int]]:
        """``span`` of each prefix, in one vectorised search (a search call costs more than
        the search itself; batching pays from three prefixes on)."""
        if len(prefixes) <= 2:
            return [self.span(p) for p in prefixes]
        return self.spans_batch(prefixes)

    def spans_batch(self, prefixes: list[bytes]) -> list[tuple[int, int]]:
        """``spans`` in one vectorised search with buffers of its own, so it is safe off the
        event loop's thread too. A prefix of KEY_BYTES or more matches the keys equal to its
        first KEY_BYTES bytes."""
        probe = np.array([p[:KEY_BYTES] for p in prefixes], dtype=f"S{KEY_BYTES}")
        upper = np.array([p + _HIGH if len(p) < KEY_BYTES else p[:KEY_BYTES] for p in prefixes],
                         dtype=f"S{KEY_BYTES}")
        lo = self.keys.searchsorted(probe, side="left").tolist()
        hi = self.keys.searchsorted(upper, side="right").tolist()
        return list(zip(lo, hi, strict=True))

    def top(self, lo: int, hi: int, k: int) -> list[int]:
        """The ``k`` (<= TOP_K) smallest distinct entry ids in [lo, hi), ascending."""
        if hi - lo <= SMALL_RANGE:
            return sorted(set(self._ids_view[lo:hi].tolist()))[:k]
        node = self.node_index.get(lo * (len(self) + 1) + hi)
        if node is None:  # not an LCP interval: cannot happen for a prefix query, but stay safe
            return np.unique(self.ids[lo:hi])[:k].tolist()
        start = self._topk_off_view[node]
        return self._topk_view[start : min(start + k, self._topk_off_view[node + 1])].tolist()

    def candidates(self, lo: int, hi: int, limit: int) -> list[int]:
        """Distinct entry ids in [lo, hi) by popularity; exhaustive up to ``limit`` entries,
        otherwise the precomputed top ids of the range."""
        if hi - lo <= max(limit, SMALL_RANGE):
            # Python's set and sort beat np.unique's fixed cost on ranges this small.
            return sorted(set(self._ids_view[lo:hi].tolist()))
        return self.top(lo, hi, TOP_K)

    # --- persistence ------------------------------------------------------------------------

    FILES = ("keys", "ids", "nodes", "topk_off", "topk")

    def save(self, directory: Path, name: str) -> list[Path]:
        nodes = np.array(sorted(self.node_index, key=self.node_index.__getitem__), dtype=np.int64)
        arrays = {"keys": self.keys, "ids": self.ids, "nodes": nodes,
                  "topk_off": self.topk_off, "topk": self.topk}
        paths = []
        for part, arr in arrays.items():
            path = directory / f"{name}.{part}.npy"
            np.save(path, arr)
            paths.append(path)
        return paths

    @classmethod
    def load(cls, directory: Path, name: str) -> PrefixArray:
        arr = {p: load_array(directory / f"{name}.{p}.npy") for p in cls.FILES}
        node_index = {int(v): i for i, v in enumerate(arr["nodes"].tolist())}
        return cls(arr["keys"], arr["ids"], node_index, arr["topk_off"], arr["topk"])


def build_prefix_array(keys: list[bytes], ids: npt.NDArray[np.int32]) -> PrefixArray:
    """Sort ``keys`` (with their entry ``ids``) and precompute top ids of every heavy range."""
    arr = np.array([k[:KEY_BYTES] for k in keys], dtype=f"S{KEY_BYTES}")
    order = np.lexsort((ids, arr))
    arr, ids = arr[order], np.ascontiguousarray(ids[order], dtype=np.int32)
    lcp = _adjacent_lcp(arr)
    los, his = _heavy_intervals(lcp, len(arr))
    topk_off, topk = _top_ids(ids, los, his)
    n1 = len(arr) + 1
    pairs = zip(los.tolist(), his.tolist(), strict=True)
    node_index = {lo * n1 + hi: i for i, (lo, hi) in enumerate(pairs)}
    return PrefixArray(arr, ids, node_index, topk_off, topk)


def _adjacent_lcp(keys: npt.NDArray[np.bytes_], chunk: int = 1 << 20) -> npt.NDArray[np.int16]:
    """lcp[i] = common prefix length in bytes of keys[i-1] and keys[i] (lcp[0] = 0)."""
    n = len(keys)
    out = np.zeros(n, dtype=np.int16)
    raw = keys.view(np.uint8).reshape(n, KEY_BYTES)
    for start in range(1, n, chunk):
        stop = min(n, start + chunk)
        diff = raw[start:stop] != raw[start - 1 : stop - 1]
        first = np.where(diff.any(axis=1), diff.argmax(axis=1), KEY_BYTES)
        out[start:stop] = first
    return out


def _heavy_intervals(lcp: npt.NDArray[np.int16], n: int) -> tuple[IntArray, IntArray]:
    """All distinct ranges of keys sharing a prefix of some depth, larger than SMALL_RANGE."""
    found: set[tuple[int, int]] = set()
    for depth in range(1, KEY_BYTES + 1):
        # A run at this depth is a maximal block whose neighbours share >= depth bytes.
        breaks = np.flatnonzero(lcp < depth)  # includes index 0
        starts = breaks
        ends = np.append(breaks[1:], n)
        big = (ends - starts) > SMALL_RANGE
        if not big.any():
            break
        found.update(zip(starts[big].tolist(), ends[big].tolist(), strict=True))
    pairs = sorted(found)
    los = np.array([p[0] for p in pairs], dtype=np.int64)
    his = np.array([p[1] for p in pairs], dtype=np.int64)
    return los, his


def _top_ids(
    ids: npt.NDArray[np.int32], los: IntArray, his: IntArray
) -> tuple[IntArray, npt.NDArray[np.int32]]:
    chunks: list[npt.NDArray[np.int32]] = []
    offsets = np.zeros(len(los) + 1, dtype=np.int64)
    for i, (lo, hi) in enumerate(zip(los.tolist(), his.tolist(), strict=True)):
        vals = ids[lo:hi]
        if hi - lo > 8 * TOP_K:
            vals = np.partition(vals, 4 * TOP_K)[: 4 * TOP_K + 1]
        top = np.unique(vals)[:TOP_K]
        if len(top) < TOP_K and hi - lo > 8 * TOP_K:  # duplicates ate the shortlist
            top = np.unique(ids[lo:hi])[:TOP_K]
        chunks.append(top.astype(np.int32))
        offsets[i + 1] = offsets[i] + len(top)
    topk = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)
    return offsets, topk
