"""``python -m loadtest``: ``run`` (one load test or a capacity search) and ``suite``.

Exit codes: 0 every SLO holds, 1 an SLO broke (named on stderr), 2 bad usage, 3 the run is
invalid because the generator fell behind its own schedule.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from loadtest import __version__
from loadtest.arrivals import ARRIVALS
from loadtest.errors import EXIT_USAGE, LoadtestError, UsageError
from loadtest.http1 import CLIENTS
from loadtest.timer import TIMERS
from loadtest.units import parse_seconds
from typeahead.numbers import float_arg, int_arg


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors become one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _positive(kind: type) -> Any:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return value

    return convert


def _seconds(text: str) -> float:
    try:
        return parse_seconds(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def add_load_options(p: argparse.ArgumentParser, *, rate: float, duration: float) -> None:
    """Options shared by ``run`` and ``suite``: schedule, generator, reports, workload."""
    g = p.add_argument_group("schedule")
    g.add_argument("--rate", type=_positive(float), default=rate, help="requests per second")
    g.add_argument("--duration", type=_seconds, default=duration, help="e.g. 30, 30s, 2m")
    g.add_argument("--arrival", choices=ARRIVALS, default="poisson")
    g.add_argument("--seed", type=int_arg(0), default=0, help="makes the workload reproducible")
    g = p.add_argument_group("generator")
    g.add_argument("--procs", type=_positive(int), default=1,
                   help="generator processes, each sending rate/N; histograms are merged")
    g.add_argument("--max-in-flight", type=_positive(int), default=1000,
                   help="per process; requests beyond it are not sent and count as 'dropped'")
    g.add_argument("--timeout", type=_seconds, default=10.0, help="per HTTP request")
    g.add_argument("--client", choices=CLIENTS, default="lean",
                   help="HTTP client for suggest, plain and generate requests: the lean "
                   "HTTP/1.1 client (default, cheapest) or aiohttp; SSE streams use aiohttp")
    g.add_argument("--timer", choices=TIMERS, default="auto",
                   help="how the scheduler wakes: a Linux timerfd (precise, no spinning; auto "
                   "where available) or millisecond loop timers")
    g.add_argument("--spin-us", type=float_arg(0.0), default=0.0,
                   help="with --timer sleep: spin (yielding to the loop) for the last N us")
    g.add_argument("--drain", type=_seconds, default=None,
                   help="wait for unfinished requests after the last send (default: timeout)")
    g.add_argument("--max-lag", default="auto",
                   help="generator lag p99 above this makes the run invalid (exit 3); default: "
                   "half the tightest latency SLO, at most 10ms")
    g = p.add_argument_group("reports")
    g.add_argument("--report", type=Path, help="write the JSON report here")
    g.add_argument("--html", type=Path, help="write the HTML report (with plots) here")
    g.add_argument("--quiet", action="store_true", help="no table on stdout")
    _add_workload_options(p)


def _add_workload_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("session workload (default)")
    g.add_argument("--log", type=Path, help="query log: .tsv/.csv/.jsonl, .gz allowed "
                   "(default: a small built-in sample)")
    g.add_argument("--text-col", default="query")
    g.add_argument("--weight-col", default=None, help="sample queries by this column")
    g.add_argument("--log-limit", type=_positive(int), default=200_000, help="rows read")
    g.add_argument("--keystroke-ms", type=_positive(float), default=180.0,
                   help="median time between keys")
    g.add_argument("--debounce-ms", type=float_arg(0.0), default=100.0)
    g.add_argument("--think-ms", type=_positive(float), default=1500.0,
                   help="median pause before a generate click")
    g.add_argument("--generate-share", type=float_arg(0.0, 1.0), default=0.1,
                   help="share of sessions that click generate")
    g.add_argument("--generate-new-share", type=float_arg(0.0, 1.0), default=0.0,
                   help="share of generate clicks made unique, so they miss the cache")
    g.add_argument("--generate-query", action="append", default=[],
                   help="cached-mix clicks use these queries (repeatable)")
    g.add_argument("--no-follow-streams", action="store_true",
                   help="do not read the SSE stream of uncached generates")
    g.add_argument("--stream-timeout", type=_seconds, default=60.0)
    g = p.add_argument_group("plain mode")
    g.add_argument("--url", help="URL template (absolute, or a path under --target); "
                   "{value} is filled from --values")
    g.add_argument("--values", type=Path, help="one value per line")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m loadtest", description="Open-model load tester, SLO verdicts.")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    run = sub.add_parser("run", help="one open-model load test with SLO verdicts")
    run.add_argument("--target", help="base URL of the service, e.g. http://127.0.0.1:8080")
    run.add_argument("--slo", action="extend", nargs="+", default=[],
                     help="e.g. suggest.p99<5ms errors<0.1%% rate>=0.99")
    run.add_argument("--find-capacity", action="store_true",
                     help="search the highest rate at which every SLO holds (from --rate)")
    run.add_argument("--capacity-steps", type=_positive(int), default=8)
    run.add_argument("--capacity-tolerance", type=_positive(float), default=0.05)
    add_load_options(run, rate=100.0, duration=30.0)
    run.set_defaults(func=_run)
    from loadtest.suite import add_parser as add_suite_parser

    add_suite_parser(sub)
    return parser


def _run(args: argparse.Namespace) -> int:
    from loadtest.command import run_command

    return run_command(args)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(args.func(args))
    except LoadtestError as exc:
        print(f"loadtest: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("loadtest: interrupted", file=sys.stderr)
        return 130
