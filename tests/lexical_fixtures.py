"""Tiny corpora built inside the tests (no shared data needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typeahead.corpus import read_rows
from typeahead.suggest.index import BuildOptions, LoadedIndex, build_index, load_index

ROWS: list[tuple[str, int]] = [
    ("new york times", 100),
    ("new york city", 80),
    ("new jersey", 60),
    ("newark airport", 50),
    ("york new", 3),
    ("the times of india", 40),
    ("google", 500),
    ("google maps", 200),
    ("Café Crème Paris", 30),
    ("東京 タワー", 20),
    ("😀 emoji search", 10),
    ("mapquest", 90),
    ("wikipedia", 70),
    ("amazon", 300),
    ("private person name", 2),  # below the default privacy floor of 3
    ("NEW YORK TIMES", 5),  # merges with "new york times"
]


def write_tsv(path: Path, rows: list[tuple[str, int]]) -> Path:
    lines = ["query\tcount"] + [f"{q}\t{c}" for q, c in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build_small_index(tmp: Path, rows: list[tuple[str, int]] = ROWS, min_count: float = 3,
                      name: str = "idx", **options: Any) -> LoadedIndex:
    """Build and load an index of ``rows``; ``options`` are further BuildOptions fields (a
    semantic layer: ``vectors=True, student_dir=..., docs=...``)."""
    corpus = write_tsv(tmp / f"{name}.tsv", rows)
    out = tmp / name
    build_index(read_rows(corpus, text_col="query", weight_col="count"), out,
                BuildOptions("query", "count", min_count, **options), corpus, progress=None)
    return load_index(out, student_dir=options.get("student_dir"))
