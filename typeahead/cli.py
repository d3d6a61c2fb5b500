"""The ``typeahead`` command line.

Each command lives in the module of its concept and exposes ``add_parser(subparsers)`` and an
``async`` or plain ``run(args, settings)``; this module only dispatches. Exit codes follow the
contract: 0 success, 2 bad usage, 1 a failed run, and every error is one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from typeahead.errors import ConfigError, TypeaheadError

# (command name, module that implements it). Modules are imported lazily so that one command's
# heavy dependencies (torch for ``distill``) never load for another (``serve``).
COMMANDS: tuple[tuple[str, str], ...] = (
    ("aggregate", "typeahead.suggest.aggregate"),
    ("build-index", "typeahead.suggest.build"),
    ("serve", "typeahead.http.server"),
    ("eval", "typeahead.eval.qac"),
    ("distill", "typeahead.train.distill_cli"),
    ("train-intent", "typeahead.train.intent_cli"),
    ("train-ranker", "typeahead.train.completion"),
    ("train-lm", "typeahead.train.charlm"),
    ("worker", "typeahead.generation.worker"),
    ("prewarm", "typeahead.generation.prewarm"),
)


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="typeahead", description="Latency-tiered hybrid search backend.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    for name, module_name in COMMANDS:
        importlib.import_module(module_name).add_parser(sub, name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.version:
            from typeahead import __version__

            print(__version__)
            return 0
        if not getattr(args, "command", None):
            parser.print_help(sys.stderr)
            return 2
        result = args.func(args)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"typeahead: {exc.message}", file=sys.stderr)
        return 2
    except TypeaheadError as exc:
        print(f"typeahead: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("typeahead: interrupted", file=sys.stderr)
        return 130
