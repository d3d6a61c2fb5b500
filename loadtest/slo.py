"""SLO expressions (``suggest.p99<5ms``, ``errors<0.1%``, ``rate>=0.99``) and their verdicts.

Grammar: ``[CLASS.]METRIC OP VALUE[UNIT]``

- CLASS: a request class (``suggest``, ``generate_cached``, ...) or group (``generate``,
  ``all``); without it the SLO covers every request.
- METRIC: ``pNN[.N]`` (percentile), ``max``, ``mean`` with a unit ``us``/``ms``/``s``;
  ``errors`` as ``%`` or a fraction; ``rate`` (answered / scheduled requests, whole run only).
- OP: ``<``, ``<=``, ``>``, ``>=``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from loadtest import CLASSES
from loadtest.errors import UsageError
from loadtest.stats import GROUPS, Stats, percentiles
from loadtest.units import format_us, us_per_unit

_EXPR = re.compile(
    r"^\s*(?:(?P<target>[a-z_]+)\.)?"
    r"(?P<metric>p\d+(?:\.\d+)?|max|mean|errors|rate)\s*"
    r"(?P<op><=|>=|<|>)\s*"
    r"(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>us|µs|ms|s|%)?\s*$"
)
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
TARGETS: tuple[str, ...] = (*CLASSES, *GROUPS)


@dataclass(frozen=True, slots=True)
class Slo:
    text: str
    target: str  # a class or group name; "all" when the expression has no prefix
    metric: str  # "p99", "p99.9", "max", "mean", "errors", "rate"
    op: str
    threshold: float  # microseconds for latency metrics, a fraction for errors and rate

    @property
    def is_latency(self) -> bool:
        return self.metric not in ("errors", "rate")


@dataclass(frozen=True, slots=True)
class Verdict:
    slo: Slo
    holds: bool
    measured: float | None  # same unit as the threshold; None when there was nothing to measure
    detail: str


def parse_slo(text: str) -> Slo:
    match = _EXPR.match(text)
    if match is None:
        raise UsageError(
            f"bad SLO {text!r}: expected [CLASS.]METRIC OP VALUE, e.g. suggest.p99<5ms, "
            "errors<0.1%, rate>=0.99"
        )
    target = match.group("target") or "all"
    metric = match.group("metric")
    if target not in TARGETS:
        names = ", ".join(TARGETS)
        raise UsageError(f"bad SLO {text!r}: unknown class {target!r} (one of {names})")
    threshold = _threshold(text, metric, float(match.group("num")), match.group("unit"))
    if metric == "rate" and match.group("target"):
        raise UsageError(f"bad SLO {text!r}: rate applies to the whole run, drop the class")
    return Slo(text.strip(), target, metric, match.group("op"), threshold)


def _threshold(text: str, metric: str, number: float, unit: str | None) -> float:
    if metric.startswith("p") and not 0 < float(metric[1:]) <= 100:
        raise UsageError(f"bad SLO {text!r}: a percentile lies in (0, 100]")
    if metric in ("errors", "rate"):
        if unit not in (None, "%"):
            raise UsageError(f"bad SLO {text!r}: {metric} takes a fraction or a percentage")
        fraction = number / 100 if unit == "%" else number
        if fraction > 1 and metric == "errors":
            raise UsageError(f"bad SLO {text!r}: write an error share as a fraction or with %")
        return fraction
    if unit in (None, "%"):
        raise UsageError(f"bad SLO {text!r}: a latency needs a unit (us, ms or s)")
    return number * us_per_unit(unit)


def parse_slos(texts: Iterable[str]) -> list[Slo]:
    # "a,b" in one flag value is accepted too; commas never occur inside one expression.
    return [parse_slo(part) for text in texts for part in text.split(",") if part.strip()]


def evaluate(slo: Slo, stats: Stats) -> Verdict:
    if slo.metric == "rate":
        return _rate_verdict(slo, stats)
    if slo.metric == "errors":
        return _errors_verdict(slo, stats)
    hist = stats.histogram(slo.target)
    if hist.get_total_count() == 0:
        return Verdict(slo, False, None, f"no successful {slo.target} requests to measure")
    if slo.metric == "max":
        value = float(hist.get_max_value())
    elif slo.metric == "mean":
        value = float(hist.get_mean_value())
    else:
        value = float(percentiles(hist, [float(slo.metric[1:])])[0])
    holds = _OPS[slo.op](value, slo.threshold)
    limit = format_us(slo.threshold)
    detail = f"{slo.target}.{slo.metric} = {format_us(value)} (limit {slo.op} {limit})"
    return Verdict(slo, holds, value, detail)


def _errors_verdict(slo: Slo, stats: Stats) -> Verdict:
    attempts = stats.attempts(slo.target)
    if attempts == 0:
        return Verdict(slo, False, None, f"no {slo.target} requests were made")
    share = stats.error_count(slo.target) / attempts
    holds = _OPS[slo.op](share, slo.threshold)
    detail = (
        f"{slo.target} errors = {share:.3%} of {attempts} "
        f"(limit {slo.op} {slo.threshold:.3%})"
    )
    return Verdict(slo, holds, share, detail)


def _rate_verdict(slo: Slo, stats: Stats) -> Verdict:
    if stats.scheduled == 0:
        return Verdict(slo, False, None, "no requests were scheduled")
    ratio = stats.responded / stats.scheduled
    holds = _OPS[slo.op](ratio, slo.threshold)
    detail = (
        f"rate = {ratio:.4f} ({stats.responded} answered of {stats.scheduled} scheduled; "
        f"limit {slo.op} {slo.threshold:g})"
    )
    return Verdict(slo, holds, ratio, detail)


def evaluate_all(slos: Sequence[Slo], stats: Stats) -> list[Verdict]:
    return [evaluate(slo, stats) for slo in slos]


def tightest_latency_us(slos: Sequence[Slo]) -> float | None:
    """The smallest upper latency bound among the SLOs (for the default lag margin)."""
    bounds = [s.threshold for s in slos if s.is_latency and s.op in ("<", "<=")]
    return min(bounds) if bounds else None
