"""Reading a query log (TSV, CSV or JSONL, optionally gzipped) into weighted queries."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from loadtest.errors import UsageError


@dataclass(frozen=True)
class QueryLog:
    texts: tuple[str, ...]
    cumulative: np.ndarray  # cumulative weights, for sampling by weight

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, float]]) -> QueryLog:
        if not pairs:
            raise UsageError("the query log has no usable rows")
        texts = tuple(text for text, _ in pairs)
        weights = np.array([weight for _, weight in pairs], dtype=np.float64)
        return cls(texts, np.cumsum(weights))

    def sample(self, rng: np.random.Generator) -> str:
        point = rng.random() * float(self.cumulative[-1])
        index = int(np.searchsorted(self.cumulative, point, side="right"))
        return self.texts[min(index, len(self.texts) - 1)]


def read_query_log(
    path: Path, text_col: str, weight_col: str | None, limit: int | None = None
) -> QueryLog:
    """Weighted queries from ``path``; rows with empty text or a weight <= 0 are skipped."""
    if not path.is_file():
        raise UsageError(f"query log {path} does not exist")
    pairs: list[tuple[str, float]] = []
    try:
        for number, row in enumerate(_rows(path), start=1):
            pair = _pair(row, text_col, weight_col, path, number)
            if pair is not None:
                pairs.append(pair)
            if limit is not None and len(pairs) >= limit:
                break
    except (OSError, UnicodeDecodeError, csv.Error, orjson.JSONDecodeError, EOFError) as exc:
        raise UsageError(f"cannot read query log {path}: {exc}") from exc
    return QueryLog.from_pairs(pairs)


def _pair(
    row: dict[str, Any], text_col: str, weight_col: str | None, path: Path, number: int
) -> tuple[str, float] | None:
    if text_col not in row:
        raise UsageError(f"{path}: no column {text_col!r} (columns: {', '.join(map(str, row))})")
    text = str(row[text_col] or "").strip()
    weight = 1.0
    if weight_col is not None:
        if weight_col not in row:
            raise UsageError(
                f"{path}: no column {weight_col!r} (columns: {', '.join(map(str, row))})"
            )
        try:
            weight = float(row[weight_col])
        except (TypeError, ValueError):
            raise UsageError(
                f"{path} row {number}: weight {row[weight_col]!r} is not a number"
            ) from None
    return (text, weight) if text and weight > 0 else None


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    suffix = path.name.removesuffix(".gz").rsplit(".", 1)[-1].lower()
    with _open(path) as handle:
        if suffix in ("tsv", "tab", "txt"):
            # AOL queries contain stray quotes: TSV is read without quoting rules.
            yield from csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        elif suffix == "csv":
            yield from csv.DictReader(handle)
        elif suffix in ("jsonl", "ndjson", "json"):
            yield from _jsonl(handle, path)
        else:
            raise UsageError(f"query log {path}: unknown format (use .tsv, .csv or .jsonl)")


def _jsonl(handle: io.TextIOBase, path: Path) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        row = orjson.loads(line)
        if not isinstance(row, dict):
            raise UsageError(f"{path} line {number}: expected a JSON object")
        yield row


def _open(path: Path) -> io.TextIOWrapper:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_values(path: Path) -> list[str]:
    """Plain mode: one value per non-empty line."""
    if not path.is_file():
        raise UsageError(f"values file {path} does not exist")
    try:
        with _open(path) as handle:
            values = [line.rstrip("\r\n") for line in handle if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read values file {path}: {exc}") from exc
    if not values:
        raise UsageError(f"values file {path} is empty")
    return values
