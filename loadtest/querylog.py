"""Reading a query log (TSV, CSV, JSONL, optionally gzipped, or Parquet) into weighted queries."""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtest.errors import UsageError
from typeahead.corpus import read_rows
from typeahead.errors import TypeaheadError


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
    """Weighted queries from ``path`` (read by ``typeahead.corpus``, as build-index reads it);
    rows with empty text or a weight of 0 are skipped."""
    pairs: list[tuple[str, float]] = []
    try:
        for row in read_rows(path, text_col=text_col, weight_col=weight_col):
            text = row.text.strip()
            if text and row.weight > 0:
                pairs.append((text, row.weight))
            if limit is not None and len(pairs) >= limit:
                break
    except TypeaheadError as exc:
        raise UsageError(f"query log {exc.message}") from exc
    return QueryLog.from_pairs(pairs)


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
