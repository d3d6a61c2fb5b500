"""Numbers from untrusted text: the one parser for every numeric input.

Python's ``int()`` and ``float()`` take far more than a plain decimal number: ``1_0``,
surrounding whitespace, ``+5``, digits of any script (``٥``, ``５``), ``nan`` and ``inf``, and
integers thousands of digits long, which cost quadratic time before Python's 4,300-digit limit
raises. Query parameters, headers, command-line flags and ``TYPEAHEAD_*`` variables all go
through here instead: ASCII digits only, a leading ``-`` only where the caller allows
negatives, and a bounded length. A bad value raises ``ValueError`` with a message that names
what was expected; each caller maps it to its own error (a 400, a usage error, a config error).
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

# Enough for any count, size or port, and for each half of a Redis stream id (< 2**64).
MAX_DIGITS = 20
_INT = re.compile(r"-?[0-9]+")
# A plain decimal: digits with an optional fraction, or a fraction alone; optional exponent.
_FLOAT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]{1,3})?")
_MAX_FLOAT_CHARS = 40


def parse_int(raw: str, *, negative: bool = False, max_digits: int = MAX_DIGITS) -> int:
    """An integer written in ASCII digits (a leading ``-`` only when ``negative``)."""
    digits = raw[1:] if raw.startswith("-") else raw
    if (len(digits) > max_digits or not _INT.fullmatch(raw)
            or (raw.startswith("-") and not negative)):
        raise ValueError(f"expected {_int_words(negative, max_digits)}, got {_show(raw)}")
    return int(raw)


def parse_float(raw: str, *, negative: bool = False) -> float:
    """A finite decimal number such as ``3``, ``0.25`` or ``1e-3`` (a leading ``-`` only when
    ``negative``)."""
    ok = (len(raw) <= _MAX_FLOAT_CHARS and _FLOAT.fullmatch(raw) is not None
          and (negative or not raw.startswith("-")))
    value = float(raw) if ok else math.nan
    if not math.isfinite(value):
        sign = "" if negative else "non-negative "
        raise ValueError(f"expected a finite {sign}decimal number, got {_show(raw)}")
    return value


def int_arg(minimum: int | None = None, maximum: int | None = None, *,
            negative: bool = False) -> Callable[[str], int]:
    """An argparse ``type=`` for integer flags: ``parse_int`` plus an inclusive range."""

    def convert(raw: str) -> int:
        try:
            value = parse_int(raw, negative=negative or (minimum is not None and minimum < 0))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        _check_range(value, minimum, maximum)
        return value

    convert.__name__ = "integer"  # argparse names the type in some messages
    return convert


def float_arg(minimum: float | None = None, maximum: float | None = None) -> Callable[[str], float]:
    """An argparse ``type=`` for decimal flags: ``parse_float`` plus an inclusive range."""

    def convert(raw: str) -> float:
        try:
            value = parse_float(raw, negative=minimum is None or minimum < 0)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        _check_range(value, minimum, maximum)
        return value

    convert.__name__ = "number"
    return convert


def _check_range(value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum:g}, got {value:g}")
    if maximum is not None and value > maximum:
        raise argparse.ArgumentTypeError(f"must be <= {maximum:g}, got {value:g}")


def _int_words(negative: bool, max_digits: int) -> str:
    kind = "an integer" if negative else "a non-negative integer"
    return f"{kind} of at most {max_digits} ASCII digits"


def _show(raw: str) -> str:
    return repr(raw[:20] + ("…" if len(raw) > 20 else ""))
