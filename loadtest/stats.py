"""Latency histograms (HdrHistogram, integer microseconds) and error counts for one run.

Every process records into its own :class:`Stats`; ``--procs N`` ships each child's
:meth:`Stats.encode` (compressed histograms, plain JSON types) to the parent, which merges them
with :meth:`Stats.merge_encoded`. Merged histograms are exact: HdrHistogram adds bucket counts,
so percentiles of the merge equal those of one histogram that saw every request.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

# One hour at microsecond resolution, 3 significant figures (0.1% relative error).
LATENCY_MAX_US = 3_600_000_000
SIG_FIGS = 3
# The latency-over-time plot needs less precision; 2 figures keeps per-bucket memory small.
TIMELINE_SIG_FIGS = 2
PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)

# Classes that are whole HTTP requests (``stream_first_token`` is a phase of a stream).
REQUEST_CLASSES: tuple[str, ...] = (
    "suggest",
    "generate_cached",
    "generate_new",
    "stream_done",
    "plain",
)
# Names an SLO may use for a group of classes.
GROUPS: dict[str, tuple[str, ...]] = {
    "all": REQUEST_CLASSES,
    "generate": ("generate_cached", "generate_new"),
}


def new_histogram(sig_figs: int = SIG_FIGS) -> HdrHistogram:
    return HdrHistogram(1, LATENCY_MAX_US, sig_figs)


def clamp_us(value_us: float) -> int:
    return min(LATENCY_MAX_US, max(1, round(value_us)))


class Stats:
    """What one run measured: latency per class, over time, the generator's lag, errors."""

    def __init__(self, bucket_s: float = 1.0) -> None:
        self.bucket_s = bucket_s
        self.latency: dict[str, HdrHistogram] = {}
        self.timeline: dict[str, dict[int, HdrHistogram]] = {}
        self.lag = new_histogram()
        # Errors by class and kind; a failed generate POST counts under the group "generate"
        # because its answer never said whether it was cached.
        self.errors: Counter[tuple[str, str]] = Counter()
        self.scheduled = 0
        self.sent = 0
        self.responded = 0

    # --- recording ------------------------------------------------------------------------

    def record(self, cls: str, latency_us: float, offset_s: float) -> None:
        value = clamp_us(latency_us)
        hist = self.latency.get(cls)
        if hist is None:
            hist = self.latency[cls] = new_histogram()
        hist.record_value(value)
        bucket = max(0, int(offset_s // self.bucket_s))
        per_class = self.timeline.setdefault(cls, {})
        slot = per_class.get(bucket)
        if slot is None:
            slot = per_class[bucket] = new_histogram(TIMELINE_SIG_FIGS)
        slot.record_value(value)

    def record_error(self, cls: str, kind: str) -> None:
        self.errors[(cls, kind)] += 1

    def record_lag(self, lag_us: float) -> None:
        self.lag.record_value(clamp_us(lag_us))

    # --- queries --------------------------------------------------------------------------

    def members(self, name: str) -> tuple[str, ...]:
        return GROUPS.get(name, (name,))

    def histogram(self, name: str) -> HdrHistogram:
        """The latency histogram of a class or group (a fresh merged copy for groups)."""
        merged = new_histogram()
        for cls in self.members(name):
            if cls in self.latency:
                merged.add(self.latency[cls])
        return merged

    def error_count(self, name: str) -> int:
        members = set(self.members(name))
        if name in ("all", "generate"):
            members.add("generate")
        return sum(n for (cls, _), n in self.errors.items() if cls in members)

    def attempts(self, name: str) -> int:
        return self.histogram(name).get_total_count() + self.error_count(name)

    def errors_by_kind(self) -> dict[str, int]:
        kinds: Counter[str] = Counter()
        for (_, kind), n in self.errors.items():
            kinds[kind] += n
        return dict(sorted(kinds.items()))

    # --- shipping between processes -------------------------------------------------------

    def encode(self) -> dict[str, Any]:
        return {
            "bucket_s": self.bucket_s,
            "latency": {cls: _enc(h) for cls, h in self.latency.items()},
            "timeline": {
                cls: {str(b): _enc(h) for b, h in slots.items()}
                for cls, slots in self.timeline.items()
            },
            "lag": _enc(self.lag),
            "errors": [[cls, kind, n] for (cls, kind), n in self.errors.items()],
            "counts": [self.scheduled, self.sent, self.responded],
        }

    def merge_encoded(self, data: dict[str, Any]) -> None:
        for cls, blob in data["latency"].items():
            self.latency.setdefault(cls, new_histogram()).add(_dec(blob))
        for cls, slots in data["timeline"].items():
            per_class = self.timeline.setdefault(cls, {})
            for bucket, blob in slots.items():
                target = per_class.setdefault(int(bucket), new_histogram(TIMELINE_SIG_FIGS))
                target.add(_dec(blob))
        self.lag.add(_dec(data["lag"]))
        for cls, kind, n in data["errors"]:
            self.errors[(cls, kind)] += n
        scheduled, sent, responded = data["counts"]
        self.scheduled += scheduled
        self.sent += sent
        self.responded += responded


def _enc(hist: HdrHistogram) -> str:
    # HdrHistogram's encoding is base64 of the compressed counts: already ASCII text.
    return bytes(hist.encode()).decode("ascii")


def _dec(blob: str) -> HdrHistogram:
    return HdrHistogram.decode(blob.encode("ascii"))


def percentiles(hist: HdrHistogram, pcts: Sequence[float]) -> list[int]:
    """``hist.get_value_at_percentile`` for many percentiles at once.

    The package walks every bucket in Python for each call (tens of ms at 3 significant
    figures); one numpy cumulative sum over the non-empty buckets answers them all. Values
    are identical: same target count, same highest-equivalent value.
    """
    total = hist.get_total_count()
    if total == 0:
        return [0 for _ in pcts]
    counts = np.ctypeslib.as_array(hist.counts)[: hist.counts_len]
    nonzero = np.flatnonzero(counts)
    cumulative = np.cumsum(counts[nonzero])
    out = []
    for pct in pcts:
        target = max(1, int(min(pct, 100.0) * total / 100 + 0.5))
        index = int(nonzero[min(int(np.searchsorted(cumulative, target)), len(nonzero) - 1)])
        out.append(hist.get_highest_equivalent_value(hist.get_value_from_index(index)))
    return out


def summarize(hist: HdrHistogram) -> dict[str, float]:
    """Count, mean and the reported percentiles of one histogram, in microseconds."""
    count = hist.get_total_count()
    out: dict[str, float] = {"count": count}
    if count == 0:
        return out
    for pct, value in zip(PERCENTILES, percentiles(hist, PERCENTILES), strict=True):
        out[pct_key(pct)] = value
    out["max_us"] = hist.get_max_value()
    out["mean_us"] = round(hist.get_mean_value(), 1)
    return out


def pct_key(pct: float) -> str:
    text = f"{pct:g}".replace(".", "_")
    return f"p{text}_us"
