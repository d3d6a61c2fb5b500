"""Helpers shared by the benchmarks: data paths, percentiles, table printing."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TYPEAHEAD_SHARED", ROOT.parent / "shared")) / "data"
AOL = SHARED / "typeahead" / "aol2006_q1m_counts.tsv.gz"
RESULTS = ROOT / "bench" / "results"


def percentile(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return float(sorted_values[idx])


def summary_us(samples_ns: list[int]) -> dict[str, float]:
    values = sorted(s / 1000 for s in samples_ns)
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "p99.9": percentile(values, 99.9),
        "mean": statistics.fmean(values) if values else float("nan"),
    }


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    cells = [header] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for j, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if value < 1000 else f"{value:,.0f}"
    return str(value)
