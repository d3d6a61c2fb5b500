from __future__ import annotations

import pytest

from loadtest.errors import UsageError
from loadtest.slo import evaluate, parse_slo, parse_slos, tightest_latency_us
from loadtest.stats import Stats


@pytest.mark.parametrize(
    ("text", "target", "metric", "op", "threshold"),
    [
        ("suggest.p99<5ms", "suggest", "p99", "<", 5000.0),
        ("generate_cached.p99<10ms", "generate_cached", "p99", "<", 10000.0),
        ("errors<0.1%", "all", "errors", "<", 0.001),
        ("errors<=0.002", "all", "errors", "<=", 0.002),
        ("rate>=0.99", "all", "rate", ">=", 0.99),
        ("rate>=99%", "all", "rate", ">=", 0.99),
        ("p99<5ms", "all", "p99", "<", 5000.0),
        ("suggest.p99.9 < 250us", "suggest", "p99.9", "<", 250.0),
        ("stream_done.max<=2s", "stream_done", "max", "<=", 2_000_000.0),
        ("generate.mean<1.5ms", "generate", "mean", "<", 1500.0),
        ("suggest.errors<1%", "suggest", "errors", "<", 0.01),
    ],
)
def test_parse(text: str, target: str, metric: str, op: str, threshold: float) -> None:
    slo = parse_slo(text)
    assert (slo.target, slo.metric, slo.op) == (target, metric, op)
    assert slo.threshold == pytest.approx(threshold)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("p99<5", "needs a unit"),
        ("suggest.p99<5%", "needs a unit"),
        ("bogus.p99<5ms", "unknown class"),
        ("p101<5ms", "percentile"),
        ("errors<5ms", "fraction or a percentage"),
        ("errors<5", "fraction"),
        ("suggest.rate>=0.9", "whole run"),
        ("p99 = 5ms", "expected [CLASS.]METRIC OP VALUE"),
        ("latency<5ms", "expected"),
        ("", "expected"),
    ],
)
def test_malformed_is_a_clear_usage_error(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_slo(text)
    assert fragment in info.value.message
    assert info.value.exit_code == 2


def test_comma_separated_and_tightest() -> None:
    slos = parse_slos(["suggest.p99<5ms,errors<1%", "p99<=2ms"])
    assert [s.text for s in slos] == ["suggest.p99<5ms", "errors<1%", "p99<=2ms"]
    assert tightest_latency_us(slos) == 2000.0
    assert tightest_latency_us(parse_slos(["errors<1%"])) is None


def _stats() -> Stats:
    stats = Stats()
    for v in range(1, 101):  # suggest: 1..100 ms
        stats.record("suggest", v * 1000, 0.0)
    for _ in range(10):
        stats.record("generate_cached", 3000, 0.0)
    stats.record_error("suggest", "http_503")
    stats.record_error("generate", "timeout")
    stats.scheduled, stats.responded = 112, 111
    return stats


def test_latency_verdicts() -> None:
    stats = _stats()
    assert evaluate(parse_slo("suggest.p99<100ms"), stats).holds
    assert not evaluate(parse_slo("suggest.p99<98ms"), stats).holds
    assert evaluate(parse_slo("suggest.p50<=50.1ms"), stats).holds
    assert evaluate(parse_slo("generate_cached.max<4ms"), stats).holds
    # "all" covers both classes: its p50 sits among the suggest values.
    verdict = evaluate(parse_slo("p50<50ms"), stats)
    assert verdict.holds and verdict.measured is not None
    assert "limit < 50.0ms" in verdict.detail


def test_class_without_samples_is_broken() -> None:
    verdict = evaluate(parse_slo("generate_new.p99<10ms"), _stats())
    assert not verdict.holds and verdict.measured is None
    assert "no successful generate_new" in verdict.detail


def test_error_and_rate_verdicts() -> None:
    stats = _stats()
    errors = evaluate(parse_slo("errors<2%"), stats)
    assert errors.holds and errors.measured == pytest.approx(2 / 112)
    assert not evaluate(parse_slo("errors<1%"), stats).holds
    assert evaluate(parse_slo("suggest.errors<1%"), stats).holds  # 1 of 101
    assert evaluate(parse_slo("generate.errors<10%"), stats).holds  # 1 of 11
    assert not evaluate(parse_slo("generate.errors<5%"), stats).holds
    rate = evaluate(parse_slo("rate>=0.99"), stats)
    assert rate.holds and rate.measured == pytest.approx(111 / 112)
    assert not evaluate(parse_slo("rate>=0.995"), stats).holds
