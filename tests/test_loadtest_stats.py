from __future__ import annotations

import multiprocessing as mp
from typing import Any

import numpy as np
import orjson

from loadtest.stats import Stats, new_histogram, percentiles, summarize


def _fill(seed: int) -> dict[str, Any]:
    """Runs in a child process: records a known set of values and returns the encoding."""
    stats = Stats()
    rng = np.random.default_rng(seed)
    for i, value in enumerate(rng.lognormal(7, 1.5, 5000)):
        stats.record("suggest", float(value), i / 1000)
        stats.record_lag(float(value) / 100)
    stats.record_error("suggest", "timeout")
    stats.scheduled, stats.sent, stats.responded = 5001, 5001, 5000
    return stats.encode()


def test_merge_across_processes_equals_one_histogram() -> None:
    with mp.get_context("spawn").Pool(2) as pool:
        encoded = pool.map(_fill, [1, 2])
    merged = Stats()
    for blob in encoded:
        # The encoding travels as JSON-safe text.
        merged.merge_encoded(orjson.loads(orjson.dumps(blob)))
    direct = new_histogram()
    for seed in (1, 2):
        for value in np.random.default_rng(seed).lognormal(7, 1.5, 5000):
            direct.record_value(max(1, round(float(value))))
    hist = merged.latency["suggest"]
    assert hist.get_total_count() == 10_000
    for pct in (50, 90, 99, 99.9, 100):
        assert hist.get_value_at_percentile(pct) == direct.get_value_at_percentile(pct)
    assert merged.lag.get_total_count() == 10_000
    assert merged.errors[("suggest", "timeout")] == 2
    assert (merged.scheduled, merged.sent, merged.responded) == (10_002, 10_002, 10_000)
    assert sum(h.get_total_count() for h in merged.timeline["suggest"].values()) == 10_000


def test_fast_percentiles_match_the_package() -> None:
    hist = new_histogram()
    for value in np.random.default_rng(3).lognormal(8, 2, 20_000):
        hist.record_value(min(3_600_000_000, max(1, int(value))))
    pcts = [1, 25, 50, 90, 99, 99.9, 99.99, 100]
    assert percentiles(hist, pcts) == [hist.get_value_at_percentile(p) for p in pcts]
    assert percentiles(new_histogram(), [50]) == [0]


def test_microsecond_resolution_and_groups() -> None:
    stats = Stats()
    stats.record("suggest", 1234, 0.0)
    stats.record("generate_cached", 5678, 0.0)
    stats.record("stream_first_token", 9_000_000, 0.0)  # a phase, not a request
    summary = summarize(stats.latency["suggest"])
    assert summary["p50_us"] == 1234  # exact below 2048us at 3 significant figures
    assert stats.histogram("generate").get_total_count() == 1
    assert stats.histogram("all").get_total_count() == 2
    stats.record_error("generate", "http_500")
    assert stats.error_count("generate") == 1 and stats.error_count("all") == 1
    assert stats.attempts("all") == 3
