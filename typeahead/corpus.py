"""Reading corpus, document and log files: TSV, CSV, JSONL (each optionally gzipped) or Parquet.

The one reader of tabular input: ``build-index``, the documents index, the worker's
``--docs`` file, ``eval``, training and the load tester's workload all read through it, so the
same file reads the same way everywhere. The rules:

- the format comes from the name (``.tsv``/``.txt``, ``.csv``, ``.jsonl``/``.ndjson``/``.json``,
  ``.parquet``; a ``.gz`` after the first three) unless given;
- TSV has a header row and no quoting: query logs hold stray quotes (``say "hi"``), read as
  typed; a field cannot hold a tab or a newline;
- CSV has a header row and the quoting of RFC 4180 (the stdlib ``csv`` module's default);
- JSONL is one JSON object per line (orjson); blank lines are skipped;
- Parquet (pyarrow, the ``parquet`` extra) is read a batch of rows at a time;
- text is UTF-8.

Malformed input raises ``DataError`` naming the file and the line (the row, for Parquet).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from typeahead.errors import DataError, MissingExtraError

FORMATS = ("tsv", "csv", "jsonl", "parquet")
SUFFIXES = ((".tsv", "tsv"), (".txt", "tsv"), (".csv", "csv"), (".jsonl", "jsonl"),
            (".ndjson", "jsonl"), (".json", "jsonl"), (".parquet", "parquet"))
# The longest field a TSV/CSV file may hold; a longer one is a DataError naming the line.
FIELD_LIMIT = 1 << 24
csv.field_size_limit(FIELD_LIMIT)
PARQUET_BATCH = 65_536  # rows converted to Python at a time


def add_column_arguments(p: Any, weight_help: str) -> None:
    """The flags naming a query log's text and count columns and its format (a command's
    own flag names the file)."""
    p.add_argument("--text-col", required=True)
    p.add_argument("--weight-col", default=None, help=weight_help)
    p.add_argument("--format", choices=FORMATS, default=None)


@dataclass(frozen=True, slots=True)
class Row:
    text: str
    weight: float
    line: int
    record: dict[str, Any]


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    name = name.removesuffix(".gz")
    for ext, fmt in SUFFIXES:
        if name.endswith(ext) and fmt != "parquet":
            return fmt
    raise DataError(f"{path}: cannot tell the format from the name; "
                    f"use --format {'|'.join(FORMATS)}")


def read_records(path: Path, fmt: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line, record) per row: the line (for Parquet the row) it starts on, counted from
    1 with the header, and the row as a dict of column -> value (str for TSV and CSV)."""
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    _check_file(path)
    if fmt == "parquet":
        return _parquet(path)
    return _text_records(path, fmt)


def read_rows(
    path: Path,
    *,
    text_col: str,
    weight_col: str | None = None,
    fmt: str | None = None,
) -> Iterator[Row]:
    """Yield one Row per record; ``weight`` is 1.0 per row when no weight column is named."""
    for line, record in read_records(path, fmt):
        row = _to_row(path, line, record, text_col, weight_col)
        if row is not None:
            yield row


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")


def _text_records(path: Path, fmt: str) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with _open_binary(path) as fh:
            lines = _decoded(fh, path)
            if fmt == "jsonl":
                yield from _jsonl(path, lines)
            else:
                yield from _delimited(path, lines, "\t" if fmt == "tsv" else ",")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc


def _open_binary(path: Path) -> io.BufferedIOBase:
    if path.name.endswith(".gz"):
        return gzip.GzipFile(path, "rb")
    return open(path, "rb")


def _decoded(fh: Iterable[bytes], path: Path) -> Iterator[str]:
    """The lines of ``fh`` as text, line endings kept (the csv module wants them)."""
    for number, raw in enumerate(fh, start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid UTF-8 ({exc.reason} at byte "
                            f"{exc.start} of the line)") from None


def _delimited(path: Path, lines: Iterable[str], sep: str
               ) -> Iterator[tuple[int, dict[str, Any]]]:
    quoting: Literal[0, 3] = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    reader = csv.DictReader(lines, delimiter=sep, quoting=quoting)
    try:
        if not reader.fieldnames:
            raise DataError(f"{path}: empty file (no header row)")
        first = 2
        for record in reader:
            yield first, record
            first = reader.line_num + 1  # a quoted CSV field may span lines
    except csv.Error as exc:
        # The inner reader counts the line that failed; the DictReader only finished ones.
        raise DataError(f"{path}:{reader.reader.line_num}: {_csv_problem(exc)}") from exc


def _csv_problem(exc: csv.Error) -> str:
    if "field larger than field limit" in str(exc):
        return f"a field is longer than {FIELD_LIMIT:,} characters"
    return f"malformed line: {exc}"


def _jsonl(path: Path, lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: invalid JSON: {exc}") from exc
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{number}: expected a JSON object per line")
        yield number, rec


def _parquet(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    parquet = _import_parquet()
    try:
        file = parquet.ParquetFile(path)
        number = 1
        for batch in file.iter_batches(batch_size=PARQUET_BATCH):
            for record in batch.to_pylist():
                number += 1
                yield number, record
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path}: not a readable Parquet file: {_first_line(exc)}") from exc


def _import_parquet() -> Any:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise MissingExtraError("reading Parquet needs pyarrow, in the 'parquet' extra: "
                                "pip install 'typeahead[parquet]'") from None
    return parquet


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


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
