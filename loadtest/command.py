"""``python -m loadtest run``: flags -> one run (or a capacity search) -> reports -> exit code."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from loadtest.client import Target
from loadtest.errors import UsageError
from loadtest.html_report import write_html
from loadtest.querylog import QueryLog, read_query_log, read_values
from loadtest.report import build_report, render_table, write_json
from loadtest.runner import RunConfig, execute
from loadtest.slo import Slo, evaluate_all, parse_slos, tightest_latency_us
from loadtest.stats import Stats
from loadtest.units import parse_duration_us
from loadtest.workload import SAMPLE_QUERIES, Plain, Sessions, Typing, Workload

DEFAULT_MAX_LAG_US = 10_000.0


@dataclass(frozen=True)
class Plan:
    """Everything a run needs, validated."""

    config: RunConfig
    slos: list[Slo]
    max_lag_us: float
    settings: dict[str, Any]


def build_plan(args: argparse.Namespace, target: str | None) -> Plan:
    slos = parse_slos(args.slo)
    workload = build_workload(args)
    base = _target_base(target, workload)
    config = RunConfig(
        target=Target(base, args.stream_timeout, follow_streams=not args.no_follow_streams,
                      client=args.client),
        workload=workload,
        rate=args.rate,
        duration=args.duration,
        arrival=args.arrival,
        seed=args.seed,
        max_in_flight=args.max_in_flight,
        timeout_s=args.timeout,
        drain_s=args.timeout if args.drain is None else args.drain,
        procs=args.procs,
        timer=args.timer,
        spin_us=args.spin_us,
    )
    max_lag = _max_lag_us(args.max_lag, slos)
    return Plan(config, slos, max_lag, _settings(args, config, slos, max_lag))


def _target_base(target: str | None, workload: Workload) -> str:
    if target:
        if not target.startswith(("http://", "https://")):
            raise UsageError(f"--target must be an http(s) URL, got {target!r}")
        return target.rstrip("/") + "/"
    if isinstance(workload, Plain) and workload.template.startswith(("http://", "https://")):
        return workload.template
    raise UsageError("--target is required (or an absolute --url in plain mode)")


def build_workload(args: argparse.Namespace) -> Workload:
    if args.url:
        values = tuple(read_values(args.values)) if args.values else ()
        return Plain(args.url, values)
    if args.values:
        raise UsageError("--values needs --url")
    log = (
        read_query_log(args.log, args.text_col, args.weight_col, args.log_limit)
        if args.log
        else QueryLog.from_pairs(list(SAMPLE_QUERIES))
    )
    typing = Typing(args.keystroke_ms, debounce_ms=args.debounce_ms, think_ms=args.think_ms)
    return Sessions(log, typing, args.generate_share, args.generate_new_share,
                    tuple(args.generate_query))


def _max_lag_us(text: str, slos: list[Slo]) -> float:
    if text != "auto":
        return parse_duration_us(text, default_unit="ms")
    tightest = tightest_latency_us(slos)
    # The lag is inside every measured latency: past half the budget it decides the verdict.
    return DEFAULT_MAX_LAG_US if tightest is None else min(DEFAULT_MAX_LAG_US, tightest / 2)


def _settings(
    args: argparse.Namespace, config: RunConfig, slos: list[Slo], max_lag_us: float
) -> dict[str, Any]:
    workload: dict[str, Any]
    if isinstance(config.workload, Plain):
        workload = {"mode": "plain", "url": args.url,
                    "values": str(args.values) if args.values else None}
    else:
        workload = {
            "mode": "sessions",
            "log": str(args.log) if args.log else "built-in sample",
            "text_col": args.text_col, "weight_col": args.weight_col,
            "keystroke_ms": args.keystroke_ms, "debounce_ms": args.debounce_ms,
            "think_ms": args.think_ms, "generate_share": args.generate_share,
            "generate_new_share": args.generate_new_share,
            "generate_queries": list(args.generate_query),
            "follow_streams": not args.no_follow_streams,
        }
    return {
        "target": config.target.base, "rate": config.rate, "duration_s": config.duration,
        "arrival": config.arrival, "seed": config.seed, "procs": config.procs,
        "max_in_flight_per_proc": config.max_in_flight, "timeout_s": config.timeout_s,
        "drain_s": config.drain_s, "max_lag_us": max_lag_us, "client": config.target.client,
        "timer": config.timer, "spin_us": config.spin_us,
        "slos": [s.text for s in slos], "workload": workload,
    }


def run_once(plan: Plan) -> tuple[dict[str, Any], Stats]:
    stats = execute(plan.config)
    verdicts = evaluate_all(plan.slos, stats)
    report = build_report(plan.settings, stats, verdicts, plan.max_lag_us, plan.config.duration)
    return report, stats


def at_rate(plan: Plan, rate: float) -> Plan:
    settings = {**plan.settings, "rate": rate}
    return replace(plan, config=replace(plan.config, rate=rate), settings=settings)


def publish(report: dict[str, Any], stats: Stats, args: argparse.Namespace) -> int:
    """Prints the table and verdict, writes the report files; returns the exit code."""
    if not args.quiet:
        print(render_table(report))
    if report["verdict"] == "fail":
        print(f"loadtest: SLO broken: {', '.join(report['broken'])}", file=sys.stderr)
    elif report["verdict"] == "invalid":
        lag = report["generator_lag"]
        print(f"loadtest: invalid run: generator lag p99 {lag.get('p99_us', 0):.0f}us exceeds "
              f"the margin {lag['margin_us']:.0f}us (use --procs or a lower --rate)",
              file=sys.stderr)
    _write_files(report, stats, args.report, args.html)
    return int(report["exit_code"])


def _write_files(report: dict[str, Any], stats: Stats, json_path: Path | None,
                 html_path: Path | None) -> None:
    if json_path is not None:
        write_json(report, json_path)
    if html_path is not None:
        write_html(report, stats, html_path)


def run_command(args: argparse.Namespace) -> int:
    plan = build_plan(args, args.target)
    if args.find_capacity:
        from loadtest.capacity import find_capacity

        return find_capacity(plan, args)
    report, stats = run_once(plan)
    return publish(report, stats, args)
