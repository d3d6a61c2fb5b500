"""The run's report: one JSON-ready dict, rendered as a terminal table or written to a file."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from loadtest import CLASSES
from loadtest.errors import EXIT_BROKEN, EXIT_INVALID, EXIT_OK, UsageError
from loadtest.slo import Verdict
from loadtest.stats import PERCENTILES, Stats, pct_key, percentiles, summarize
from loadtest.units import format_us

REPORT_VERSION = 1


def build_report(
    settings: dict[str, Any],
    stats: Stats,
    verdicts: Sequence[Verdict],
    lag_margin_us: float,
    duration_s: float,
) -> dict[str, Any]:
    lag = summarize(stats.lag)
    valid = lag.get("p99_us", 0.0) <= lag_margin_us
    broken = [v.slo.text for v in verdicts if not v.holds]
    verdict, code = _verdict(valid, broken)
    return {
        "version": REPORT_VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": settings,
        "verdict": verdict,
        "exit_code": code,
        "broken": broken,
        "valid": valid,
        "generator_lag": {**lag, "margin_us": lag_margin_us},
        "rates": _rates(settings, stats, duration_s),
        "classes": {
            cls: {**summarize(stats.histogram(cls)), "errors": stats.error_count(cls)}
            for cls in CLASSES
            if cls in stats.latency or stats.error_count(cls)
        },
        "all": {**summarize(stats.histogram("all")), "errors": stats.error_count("all")},
        "errors": stats.errors_by_kind(),
        "errors_by_class": _errors_by_class(stats),
        "slos": [_verdict_json(v) for v in verdicts],
        "timeline": _timeline(stats),
    }


def _verdict(valid: bool, broken: list[str]) -> tuple[str, int]:
    if not valid:
        return "invalid", EXIT_INVALID
    if broken:
        return "fail", EXIT_BROKEN
    return "pass", EXIT_OK


def _rates(settings: dict[str, Any], stats: Stats, duration_s: float) -> dict[str, float]:
    per_s = 1.0 / duration_s if duration_s > 0 else 0.0
    return {
        "target_per_s": float(settings.get("rate", 0.0)),
        "scheduled_per_s": round(stats.scheduled * per_s, 2),
        "sent_per_s": round(stats.sent * per_s, 2),
        "answered_per_s": round(stats.responded * per_s, 2),
        "scheduled": stats.scheduled,
        "sent": stats.sent,
        "answered": stats.responded,
        "answered_share": round(stats.responded / stats.scheduled, 6) if stats.scheduled else 0.0,
    }


def _errors_by_class(stats: Stats) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (cls, kind), n in sorted(stats.errors.items()):
        out.setdefault(cls, {})[kind] = n
    return out


def _verdict_json(v: Verdict) -> dict[str, Any]:
    return {
        "slo": v.slo.text,
        "class": v.slo.target,
        "metric": v.slo.metric,
        "op": v.slo.op,
        "threshold": v.slo.threshold,
        "unit": "us" if v.slo.is_latency else "fraction",
        "measured": v.measured,
        "holds": v.holds,
        "detail": v.detail,
    }


def _timeline(stats: Stats) -> dict[str, list[dict[str, float]]]:
    out: dict[str, list[dict[str, float]]] = {}
    for cls, slots in stats.timeline.items():
        points = []
        for bucket, hist in sorted(slots.items()):
            p50, p99 = percentiles(hist, (50.0, 99.0))
            points.append({"t_s": bucket * stats.bucket_s, "count": hist.get_total_count(),
                           "p50_us": p50, "p99_us": p99, "max_us": hist.get_max_value()})
        out[cls] = points
    return out


def write_json(report: dict[str, Any], path: Path) -> None:
    try:
        path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    except OSError as exc:
        raise UsageError(f"cannot write report {path}: {exc.strerror}") from exc


# --- terminal ---------------------------------------------------------------------------------

_COLUMNS = ("count", "errors", *(pct_key(p) for p in PERCENTILES), "max_us")
_HEADERS = ("count", "errors", *(f"p{p:g}" for p in PERCENTILES), "max")


def render_table(report: dict[str, Any]) -> str:
    rows = [("class", *_HEADERS)]
    for cls, row in report["classes"].items():
        rows.append((cls, *_cells(row)))
    rows.append(("all", *_cells(report["all"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.extend(_footer(report))
    return "\n".join(lines)


def _cells(row: dict[str, Any]) -> list[str]:
    cells = []
    for key in _COLUMNS:
        value = row.get(key)
        if value is None:
            cells.append("-")
        elif key in ("count", "errors"):
            cells.append(str(int(value)))
        else:
            cells.append(format_us(value))
    return cells


def _footer(report: dict[str, Any]) -> list[str]:
    lag, rates = report["generator_lag"], report["rates"]
    state = "ok" if report["valid"] else "TOO HIGH: the run is invalid"
    lines = [
        "",
        f"generator lag: p50 {format_us(lag.get('p50_us', 0))}  "
        f"p99 {format_us(lag.get('p99_us', 0))}  max {format_us(lag.get('max_us', 0))}  "
        f"(margin p99 <= {format_us(lag['margin_us'])}: {state})",
        f"rate/s: target {rates['target_per_s']:g}  scheduled {rates['scheduled_per_s']:g}  "
        f"sent {rates['sent_per_s']:g}  answered {rates['answered_per_s']:g}",
    ]
    if report["errors"]:
        kinds = ", ".join(f"{k} {n}" for k, n in report["errors"].items())
        lines.append(f"errors: {kinds}")
    for slo in report["slos"]:
        lines.append(f"SLO {'PASS' if slo['holds'] else 'FAIL'}  {slo['slo']}: {slo['detail']}")
    lines.append(_verdict_line(report))
    return lines


def _verdict_line(report: dict[str, Any]) -> str:
    if report["verdict"] == "invalid":
        return "verdict: INVALID (the generator fell behind its schedule; the run proves nothing)"
    if report["verdict"] == "fail":
        return f"verdict: FAIL (broken: {', '.join(report['broken'])})"
    return "verdict: PASS" if report["slos"] else "verdict: PASS (no SLOs given)"
