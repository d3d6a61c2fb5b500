"""``run --find-capacity``: the highest arrival rate at which every SLO holds.

Doubles the rate from ``--rate`` while the SLOs hold (halves it while they do not), then
bisects between the last passing and the first failing rate until they are within
``--capacity-tolerance``. An invalid run (the generator fell behind) ends the search: rates
above it cannot be measured with this many ``--procs``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any

from loadtest.command import Plan, at_rate, publish, run_once
from loadtest.errors import EXIT_BROKEN, EXIT_INVALID, EXIT_OK, UsageError
from loadtest.stats import Stats


@dataclass
class Search:
    best: tuple[float, dict[str, Any], Stats] | None = None  # highest passing run
    lowest_fail: float | None = None
    generator_bound: float | None = None  # first rate whose run was invalid
    steps: list[dict[str, Any]] = field(default_factory=list)

    def next_rate(self, rate: float) -> float:
        low = self.best[0] if self.best else None
        if self.lowest_fail is None:
            return rate * 2
        if low is None:
            return rate / 2
        return (low + self.lowest_fail) / 2

    def converged(self, tolerance: float) -> bool:
        if self.best is None or self.lowest_fail is None:
            return False
        return (self.lowest_fail - self.best[0]) / self.best[0] <= tolerance


def search(plan: Plan, max_steps: int, tolerance: float) -> Search:
    state = Search()
    rate = plan.config.rate
    for _ in range(max_steps):
        report, stats = run_once(at_rate(plan, rate))
        state.steps.append({"rate": rate, "verdict": report["verdict"],
                            "broken": report["broken"]})
        print(f"loadtest: capacity step {len(state.steps)}: {rate:g}/s -> "
              f"{report['verdict']}", file=sys.stderr)
        if report["verdict"] == "invalid":
            state.generator_bound = rate
            break
        if report["verdict"] == "pass" and (state.best is None or rate > state.best[0]):
            state.best = (rate, report, stats)
        elif report["verdict"] == "fail":
            state.lowest_fail = min(rate, state.lowest_fail or rate)
        if state.converged(tolerance) or rate < 0.5:
            break
        rate = state.next_rate(rate)
    return state


def find_capacity(plan: Plan, args: argparse.Namespace) -> int:
    if not plan.slos:
        raise UsageError("--find-capacity needs at least one --slo")
    state = search(plan, args.capacity_steps, args.capacity_tolerance)
    if state.best is None:
        print("loadtest: no rate tried met every SLO", file=sys.stderr)
        return EXIT_BROKEN
    rate, report, stats = state.best
    report["capacity"] = {
        "rate_per_s": rate,
        "lowest_failing_rate_per_s": state.lowest_fail,
        "generator_bound_at_per_s": state.generator_bound,
        "steps": state.steps,
    }
    publish(report, stats, args)
    print(_summary(state, rate))
    return EXIT_INVALID if state.generator_bound is not None else EXIT_OK


def _summary(state: Search, rate: float) -> str:
    if state.generator_bound is not None:
        return (f"capacity: at least {rate:g}/s; the generator could not keep up at "
                f"{state.generator_bound:g}/s (add --procs)")
    if state.lowest_fail is None:
        return f"capacity: at least {rate:g}/s (every rate tried passed)"
    return f"capacity: {rate:g}/s (SLOs broke at {state.lowest_fail:g}/s)"
