"""Arrival schedules for the open model: when each request (or session) should start.

Times are offsets in seconds from the start of the run. They depend only on the rate, the
kind and the seeded generator, never on how fast the server answers: that is what makes the
model open.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from loadtest.errors import UsageError

ARRIVALS: tuple[str, ...] = ("poisson", "constant")
_BLOCK = 4096  # exponential gaps drawn per numpy call


def arrival_times(
    rate: float, kind: str, rng: np.random.Generator, *, start: float = 0.0, phase: float = 0.0
) -> Iterator[float]:
    """Endless increasing times from ``start`` at ``rate`` per second.

    ``phase`` (a fraction of one interval) staggers constant schedules of several processes
    so that they do not all fire at the same instant.
    """
    if rate <= 0:
        raise UsageError(f"rate must be positive, got {rate:g}")
    if kind == "constant":
        return _constant(rate, start, phase)
    if kind == "poisson":
        return _poisson(rate, rng, start)
    raise UsageError(f"unknown arrival process {kind!r} (one of {', '.join(ARRIVALS)})")


def _constant(rate: float, start: float, phase: float) -> Iterator[float]:
    interval = 1.0 / rate
    i = 0
    while True:
        # Multiplying (not accumulating) keeps long schedules free of float drift.
        yield start + (i + phase) * interval
        i += 1


def _poisson(rate: float, rng: np.random.Generator, start: float) -> Iterator[float]:
    t = start
    while True:
        gaps = rng.exponential(1.0 / rate, _BLOCK)
        for gap in np.cumsum(gaps).tolist():
            yield t + gap
        t += float(gaps.sum())
