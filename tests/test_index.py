from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.lexical_fixtures import ROWS, build_small_index, write_tsv
from typeahead.corpus import read_rows
from typeahead.errors import ArtifactError, DataError
from typeahead.suggest.index import BuildOptions, build_index, load_index


def test_manifest_records_source_options_counts_and_files(tmp_path: Path) -> None:
    idx = build_small_index(tmp_path)
    m = idx.manifest
    assert m["kind"] == "typeahead-index" and m["format_version"] == 1
    assert m["source"]["sha256"] and m["source"]["path"].endswith("idx.tsv")
    assert m["options"]["min_count"] == 3
    assert m["counts"]["rows"] == len(ROWS)
    assert m["counts"]["distinct"] == len(ROWS) - 1  # NEW YORK TIMES merged
    assert m["counts"]["below_floor"] == 1
    assert m["counts"]["entries"] == idx.entries == len(ROWS) - 2
    assert all(f["sha256"] and f["bytes"] >= 0 for f in m["files"].values())
    assert "built_at" in m and m["build_seconds"] >= 0


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl", "tsv.gz", "jsonl.gz"])
def test_reads_every_format(tmp_path: Path, fmt: str) -> None:
    rows = [("hello world", 5), ("help me", 4), ('say "hi", ok', 3)]
    base = fmt.removesuffix(".gz")
    if base == "tsv":
        text = "q\tn\n" + "".join(f"{q}\t{n}\n" for q, n in rows)
    elif base == "csv":
        text = "q,n\n" + "".join('"' + q.replace('"', '""') + f'",{n}\n' for q, n in rows)
    else:
        text = "".join(json.dumps({"q": q, "n": n}) + "\n" for q, n in rows)
    path = tmp_path / f"corpus.{fmt}"
    data = text.encode()
    path.write_bytes(gzip.compress(data) if fmt.endswith(".gz") else data)
    out = tmp_path / "out"
    build_index(read_rows(path, text_col="q", weight_col="n"), out,
                BuildOptions("q", "n", 3), path, progress=None)
    idx = load_index(out)
    assert [s.text for s in idx.lexical.suggest("he", 5)] == ["hello world", "help me"]
    assert [s.text for s in idx.lexical.suggest("say", 5)] == ['say "hi", ok']


def test_without_weight_column_rows_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "log.tsv"
    path.write_text("query\n" + "a b\n" * 3 + "a c\n" * 2, encoding="utf-8")
    out = tmp_path / "out"
    build_index(read_rows(path, text_col="query"), out, BuildOptions("query", None, 3), path,
                progress=None)
    assert [s.text for s in load_index(out).lexical.suggest("a", 5)] == ["a b"]


def test_missing_directory_and_manifest(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no such"):
        load_index(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match=r"manifest\.json is missing"):
        load_index(tmp_path / "empty")


def test_corrupt_manifest(tmp_path: Path) -> None:
    idx = build_small_index(tmp_path)
    (idx.path / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ArtifactError, match="corrupt manifest"):
        load_index(idx.path)


def test_incompatible_version_and_kind(tmp_path: Path) -> None:
    idx = build_small_index(tmp_path)
    path = idx.path / "manifest.json"
    m = json.loads(path.read_text())
    path.write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(ArtifactError, match="version 99 is not supported"):
        load_index(idx.path)
    path.write_text(json.dumps({**m, "kind": "something-else"}))
    with pytest.raises(ArtifactError, match="not a typeahead-index"):
        load_index(idx.path)


def test_truncated_and_corrupted_data_files(tmp_path: Path) -> None:
    idx = build_small_index(tmp_path)
    blob = idx.path / "display.bin"
    original = blob.read_bytes()
    blob.write_bytes(original[:-3])
    with pytest.raises(ArtifactError, match=r"display\.bin has the wrong size"):
        load_index(idx.path)
    blob.write_bytes(b"X" * len(original))
    with pytest.raises(ArtifactError, match=r"display\.bin is corrupt"):
        load_index(idx.path)
    (idx.path / "display.bin").unlink()
    with pytest.raises(ArtifactError, match=r"display\.bin is missing"):
        load_index(idx.path)


def test_failed_rebuild_keeps_the_old_index(tmp_path: Path) -> None:
    idx = build_small_index(tmp_path)
    bad = write_tsv(tmp_path / "bad.tsv", [("x", 1)])
    with pytest.raises(DataError, match="no entry reaches --min-count"):
        build_index(read_rows(bad, text_col="query", weight_col="count"), idx.path,
                    BuildOptions("query", "count", 3), bad, progress=None)
    assert load_index(idx.path).entries == idx.entries
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".idx.tmp")]


def test_bad_weight_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "c.tsv"
    path.write_text("query\tcount\nok\t3\nbad\tlots\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"c.tsv:3: column 'count' is not a number"):
        list(read_rows(path, text_col="query", weight_col="count"))
    path.write_text("query\tcount\nneg\t-1\n", encoding="utf-8")
    with pytest.raises(DataError, match="finite number >= 0"):
        list(read_rows(path, text_col="query", weight_col="count"))


def test_invalid_utf8_and_gzip(tmp_path: Path) -> None:
    path = tmp_path / "c.tsv"
    path.write_bytes(b"query\n\xff\xfe\n")
    with pytest.raises(DataError, match="not valid UTF-8"):
        list(read_rows(path, text_col="query"))
    gz = tmp_path / "c.tsv.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        list(read_rows(gz, text_col="query"))
