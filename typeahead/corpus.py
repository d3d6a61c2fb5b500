"""Reading corpus and log files: TSV, CSV or JSONL, optionally gzipped.

One reader serves ``build-index``, ``eval`` and the load tester's workload, so the same file
reads the same way everywhere. Malformed input raises ``DataError`` naming the file and line.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from typeahead.errors import DataError

FORMATS = ("tsv", "csv", "jsonl")
# The longest field a TSV/CSV file may hold; a longer one is a DataError naming the line.
FIELD_LIMIT = 1 << 24
csv.field_size_limit(FIELD_LIMIT)


@dataclass(frozen=True, slots=True)
class Row:
    text: str
    weight: float
    line: int
    record: dict[str, Any]


def detect_format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    for ext, fmt in ((".tsv", "tsv"), (".txt", "tsv"), (".csv", "csv"), (".jsonl", "jsonl"),
                     (".ndjson", "jsonl"), (".json", "jsonl")):
        if name.endswith(ext):
            return fmt
    raise DataError(f"{path}: cannot tell the format from the name; use --format tsv|csv|jsonl")


def open_text(path: Path) -> IO[str]:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    raw = gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")


def read_rows(
    path: Path,
    *,
    text_col: str,
    weight_col: str | None = None,
    fmt: str | None = None,
) -> Iterator[Row]:
    """Yield one Row per record; ``weight`` is 1.0 per row when no weight column is named."""
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    records = _jsonl(path) if fmt == "jsonl" else _delimited(path, "\t" if fmt == "tsv" else ",")
    try:
        for line, record in records:
            row = _to_row(path, line, record, text_col, weight_col)
            if row is not None:
                yield row
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc


def _delimited(path: Path, sep: str) -> Iterator[tuple[int, dict[str, Any]]]:
    with open_text(path) as fh:
        # TSV query logs contain stray quotes; only CSV follows quoting rules.
        quoting: Literal[0, 3] = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
        reader = csv.DictReader(fh, delimiter=sep, quoting=quoting)
        try:
            if not reader.fieldnames:
                raise DataError(f"{path}: empty file (no header row)")
            yield from enumerate(reader, start=2)
        except csv.Error as exc:
            # The inner reader counts the line that failed; the DictReader only finished ones.
            raise DataError(f"{path}:{reader.reader.line_num}: {_csv_problem(exc)}") from exc


def _csv_problem(exc: csv.Error) -> str:
    if "field larger than field limit" in str(exc):
        return f"a field is longer than {FIELD_LIMIT:,} characters"
    return f"malformed line: {exc}"


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open_text(path) as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise DataError(f"{path}:{i}: invalid JSON: {exc}") from exc
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{i}: expected a JSON object per line")
            yield i, rec


def _to_row(
    path: Path, line: int, rec: dict[str, Any], text_col: str, weight_col: str | None
) -> Row | None:
    if text_col not in rec:
        raise DataError(f"{path}:{line}: no column {text_col!r} (columns: {_cols(rec)})")
    text = rec[text_col]
    if text is None:
        return None
    if not isinstance(text, str):
        text = str(text)
    weight = 1.0
    if weight_col is not None:
        if weight_col not in rec:
            raise DataError(f"{path}:{line}: no column {weight_col!r} (columns: {_cols(rec)})")
        weight = _weight(path, line, rec[weight_col], weight_col)
    return Row(text=text, weight=weight, line=line, record=rec)


def _weight(path: Path, line: int, value: Any, col: str) -> float:
    try:
        w = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{path}:{line}: column {col!r} is not a number: {value!r}") from None
    if not math.isfinite(w) or w < 0:
        raise DataError(f"{path}:{line}: column {col!r} must be a finite number >= 0, "
                        f"got {value!r}")
    return w


def _cols(rec: dict[str, Any]) -> str:
    return ", ".join(str(k) for k in rec if k is not None)
