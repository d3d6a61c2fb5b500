"""``build-index`` never destroys anything but an index it built, and refuses bad inputs with
one line: an output that is not an index, an oversized field, a student that does not load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.lexical_fixtures import ROWS, build_small_index, write_tsv
from typeahead.corpus import FIELD_LIMIT, read_rows
from typeahead.errors import ConfigError, DataError
from typeahead.manifest import atomic_directory
from typeahead.suggest.index import MAX_ENTRY_CHARS, BuildOptions, build_index, load_index
from typeahead.suggest.service import SuggestService


def build(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "typeahead", "build-index", "--quiet",
                           "--no-vectors", "--weight-col", "count", *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def one_line_error(res: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert res.returncode == code, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_tsv(tmp_path / "corpus.tsv", ROWS)


def test_a_directory_that_is_not_an_index_is_never_replaced(tmp_path: Path,
                                                            corpus: Path) -> None:
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    (home / "notes" / "thesis.txt").write_text("years of work")
    (home / "manifest.json").write_text('{"kind": "something-else"}')
    before = tree(home)
    res = build("--corpus", str(corpus), "--out", str(home))
    one_line_error(res, 2, "is not a typeahead-index")
    assert tree(home) == before


def test_a_file_is_never_turned_into_a_directory(tmp_path: Path, corpus: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    one_line_error(build("--corpus", str(corpus), "--out", str(target)), 2, "not a directory")
    assert target.read_text() == "keep me"
    # The corpus itself is a file too.
    one_line_error(build("--corpus", str(corpus), "--out", str(corpus)), 2, "")
    assert corpus.read_text().startswith("query\tcount")


def test_the_working_directory_and_the_inputs_are_never_replaced(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    corpus = write_tsv(data / "corpus.tsv", ROWS)
    (data / "README").write_text("the data")
    before = tree(tmp_path)
    one_line_error(build("--corpus", "data/corpus.tsv", "--out", ".", cwd=tmp_path), 2,
                   "refusing to replace a directory that holds")
    one_line_error(build("--corpus", str(corpus), "--out", str(data)), 2, "corpus.tsv")
    one_line_error(build("--corpus", str(corpus), "--out", str(tmp_path)), 2, "holds")
    assert tree(tmp_path) == before


def test_an_index_holding_the_corpus_or_the_cwd_is_not_replaced(tmp_path: Path) -> None:
    idx = build_small_index(tmp_path)
    inside = write_tsv(idx.path / "corpus.tsv", ROWS)
    one_line_error(build("--corpus", str(inside), "--out", str(idx.path)), 2, "corpus.tsv")
    inside.unlink()
    corpus = write_tsv(tmp_path / "c.tsv", ROWS)
    one_line_error(build("--corpus", str(corpus), "--out", ".", cwd=idx.path), 2, "holds")
    assert load_index(idx.path).entries == idx.entries


def test_a_previous_index_or_an_empty_directory_is_replaced(tmp_path: Path,
                                                            corpus: Path) -> None:
    idx = build_small_index(tmp_path)
    (tmp_path / "empty").mkdir()
    for out in (idx.path, tmp_path / "empty", tmp_path / "new" / "deeper"):
        res = build("--corpus", str(corpus), "--out", str(out), "--min-count", "50")
        assert res.returncode == 0, res.stderr
        assert load_index(out).entries == sum(1 for _, c in ROWS if c >= 50)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_the_library_refuses_too(tmp_path: Path, corpus: Path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "x").write_text("x")
    with pytest.raises(ConfigError, match="is not a typeahead-index"):
        build_index(read_rows(corpus, text_col="query", weight_col="count"), keep,
                    BuildOptions("query", "count"), corpus, progress=None)
    assert tree(keep) == {"x": b"x"}


def test_what_appears_at_the_target_during_a_build_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with (pytest.raises(ConfigError, match="is not a typeahead-index"),
          atomic_directory(target, kind="typeahead-index") as tmp):
        (tmp / "manifest.json").write_text('{"kind": "typeahead-index"}')
        target.mkdir()
        (target / "someone-elses.txt").write_text("mine")
    assert tree(target) == {"someone-elses.txt": b"mine"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the temporary build is gone


def test_a_failed_swap_puts_the_old_index_back(tmp_path: Path, corpus: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    idx = build_small_index(tmp_path)
    real = Path.rename
    calls: list[Path] = []

    def rename(self: Path, target: Path) -> Path:  # the second rename moves the new one in
        calls.append(self)
        if len(calls) == 2:
            raise OSError("simulated failure")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="simulated"):
        build_index(read_rows(corpus, text_col="query", weight_col="count"), idx.path,
                    BuildOptions("query", "count", 50), corpus, progress=None)
    monkeypatch.undo()
    assert load_index(idx.path).entries == idx.entries
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_oversized_tsv_field_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "big.tsv"
    with path.open("w", encoding="utf-8") as fh:
        fh.write("query\tcount\nfine\t5\n")
        fh.write("x" * (FIELD_LIMIT + 1) + "\t5\n")
    with pytest.raises(DataError, match=r"big\.tsv:3: a field is longer than 16,777,216"):
        list(read_rows(path, text_col="query", weight_col="count"))
    one_line_error(build("--corpus", str(path), "--out", str(tmp_path / "o")), 1, "big.tsv:3")


def test_entries_longer_than_the_limit_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    long_ones = ["y" * (MAX_ENTRY_CHARS + 1), "z " * 2_000_000]
    records = [{"query": q, "count": c} for q, c in ROWS] + \
        [{"query": q, "count": 1000} for q in long_ones] + \
        [{"query": "w" * MAX_ENTRY_CHARS, "count": 1000}]
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n")
    out = tmp_path / "idx"
    res = build("--corpus", str(path), "--out", str(out))
    assert res.returncode == 0, res.stderr
    index = load_index(out)
    assert index.manifest["counts"]["too_long"] == 2
    service = SuggestService(index=index)
    for prefix in ("y", "z", "w"):
        texts = [s["text"] for s in service.suggest(prefix, 10)["suggestions"]]
        assert all(len(t) <= MAX_ENTRY_CHARS for t in texts)
    assert "w" * MAX_ENTRY_CHARS in [s["text"] for s in service.suggest("w", 10)["suggestions"]]


def test_an_explicit_student_must_exist_and_load(tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "o"
    res = subprocess.run([sys.executable, "-m", "typeahead", "build-index", "--quiet",
                          "--corpus", str(corpus), "--out", str(out),
                          "--student", str(tmp_path / "nonexistent")],
                         capture_output=True, text=True, timeout=120)
    one_line_error(res, 2, "no such directory")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}")
    res = subprocess.run([sys.executable, "-m", "typeahead", "build-index", "--quiet",
                          "--corpus", str(corpus), "--out", str(out), "--student", str(broken)],
                         capture_output=True, text=True, timeout=120)
    one_line_error(res, 1, "broken")
    assert not out.exists()
