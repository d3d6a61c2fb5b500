"""Durations in the units people write them in (``5ms``, ``250us``, ``2m``)."""

from __future__ import annotations

import re

from loadtest.errors import UsageError

# Microseconds per unit: histograms are recorded in integer microseconds.
_US_PER_UNIT = {"us": 1.0, "µs": 1.0, "ms": 1_000.0, "s": 1_000_000.0, "m": 60_000_000.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|µs|ms|s|m)?\s*$")


def parse_duration_us(text: str, *, default_unit: str = "s") -> float:
    """``"5ms"`` -> 5000.0; a bare number is in ``default_unit``."""
    match = _DURATION.match(text)
    if match is None:
        raise UsageError(f"bad duration {text!r}: expected a number with us, ms, s or m")
    unit = match.group(2) or default_unit
    return float(match.group(1)) * _US_PER_UNIT[unit]


def parse_seconds(text: str) -> float:
    """A duration flag in seconds (``30``, ``30s``, ``2m``, ``500ms``)."""
    return parse_duration_us(text) / 1_000_000.0


def us_per_unit(unit: str) -> float:
    return _US_PER_UNIT[unit]


def format_us(value: float) -> str:
    """Microseconds as a short human string with a unit that keeps 3-4 significant digits."""
    if value < 1_000:
        return f"{value:.0f}us"
    if value < 1_000_000:
        return f"{value / 1_000:.3g}ms" if value < 10_000 else f"{value / 1_000:.1f}ms"
    return f"{value / 1_000_000:.3g}s"
