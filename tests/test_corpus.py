"""The one reader of tabular input (typeahead.corpus): each format, and bad input named by file
and line. build-index, the documents index, the worker's --docs file and the load tester's
workload all read through it."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from typeahead.corpus import read_records, read_rows
from typeahead.errors import DataError, MissingExtraError

# The same three queries in every format: stray quotes, a comma, a non-ASCII letter.
QUERIES = [('say "hi"', 3), ("paris, france", 2), ("café", 1)]
EXPECTED = [(2, 'say "hi"', 3.0), (3, "paris, france", 2.0), (4, "café", 1.0)]


def write(path: Path, text: str) -> Path:
    data = text.encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def tsv() -> str:
    return "query\tcount\n" + "".join(f"{q}\t{n}\n" for q, n in QUERIES)


def csv_text() -> str:
    quoted = ['"' + q.replace('"', '""') + '"' for q, _ in QUERIES]
    return "query,count\r\n" + "".join(f"{q},{n}\r\n" for q, (_, n) in zip(quoted, QUERIES,
                                                                         strict=True))


def jsonl() -> str:
    import json

    return "\n".join(json.dumps({"query": q, "count": n}) for q, n in QUERIES) + "\n\n"


def parquet(path: Path) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"query": [q for q, _ in QUERIES], "count": [n for _, n in QUERIES]})
    pq.write_table(table, path, row_group_size=2)  # two row groups: batches are joined
    return path


def rows(path: Path, fmt: str | None = None) -> list[tuple[int, str, float]]:
    return [(r.line, r.text, r.weight)
            for r in read_rows(path, text_col="query", weight_col="count", fmt=fmt)]


@pytest.mark.parametrize("name", ["q.tsv", "q.tsv.gz", "q.txt", "q.csv", "q.csv.gz"])
def test_delimited_files(tmp_path: Path, name: str) -> None:
    text = csv_text() if ".csv" in name else tsv()
    assert rows(write(tmp_path / name, text)) == EXPECTED


def test_tsv_reads_quotes_as_typed_and_csv_by_its_quoting_rules(tmp_path: Path) -> None:
    path = write(tmp_path / "q.tsv", 'query\tcount\n"quoted"\t1\nhalf "open\t2\n')
    assert [r.text for r in read_rows(path, text_col="query")] == ['"quoted"', 'half "open']
    path = write(tmp_path / "q.csv", 'query,count\n"two\nlines",1\nnext,2\n')
    assert rows(path) == [(2, "two\nlines", 1.0), (4, "next", 2.0)]


@pytest.mark.parametrize("name", ["q.jsonl", "q.jsonl.gz", "q.ndjson", "q.json"])
def test_json_lines(tmp_path: Path, name: str) -> None:
    assert rows(write(tmp_path / name, jsonl())) == [(n - 1, q, w) for n, q, w in EXPECTED]


def test_parquet_by_suffix_or_by_format(tmp_path: Path) -> None:
    path = parquet(tmp_path / "q.parquet")
    assert rows(path) == EXPECTED
    assert rows(path.rename(tmp_path / "q.data"), fmt="parquet") == EXPECTED


def test_records_keep_every_column(tmp_path: Path) -> None:
    path = write(tmp_path / "q.tsv", "query\tcount\textra\nx\t1\ty\n")
    assert list(read_records(path)) == [(2, {"query": "x", "count": "1", "extra": "y"})]


@pytest.mark.parametrize(("name", "text", "message"), [
    ("b.tsv", "query\tcount\nok\t1\nbad\tlots\n", r"b.tsv:3: column 'count' is not a number"),
    ("b.tsv", "query\tcount\nok\t1\nneg\t-2\n", r"b.tsv:3: column 'count' must be a finite"),
    ("b.tsv", "q\tcount\nok\t1\n", r"b.tsv:2: no column 'query' \(columns: q, count\)"),
    ("b.tsv", "", "b.tsv: empty file"),
    ("b.csv", 'query,count\nok,1\n"open,2\n', r"b.csv:3: column 'count' is not a number"),
    ("b.jsonl", '{"query": "a", "count": 1}\n\n{"query": \n', r"b.jsonl:3: invalid JSON"),
    ("b.jsonl", '{"query": "a", "count": 1}\n[1, 2]\n', r"b.jsonl:2: expected a JSON object"),
    ("b.xml", "<x/>", "b.xml: cannot tell the format"),
])
def test_bad_input_names_file_and_line(tmp_path: Path, name: str, text: str,
                                       message: str) -> None:
    path = write(tmp_path / name, text)
    with pytest.raises(DataError, match=message):
        rows(path)


def test_bad_bytes_and_files(tmp_path: Path) -> None:
    path = tmp_path / "u.tsv"
    path.write_bytes(b"query\tcount\nok\t1\nbad \xff\t2\n")
    with pytest.raises(DataError, match=r"u.tsv:3: not valid UTF-8"):
        rows(path)
    (tmp_path / "g.tsv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"g\.tsv\.gz: cannot read"):
        rows(tmp_path / "g.tsv.gz")
    (tmp_path / "p.parquet").write_bytes(b"not parquet")
    pytest.importorskip("pyarrow")
    with pytest.raises(DataError, match=r"p\.parquet: not a readable Parquet file"):
        rows(tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"gone\.csv: no such file"):
        rows(tmp_path / "gone.csv")


def test_parquet_without_pyarrow_names_the_extra(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "q.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails
    with pytest.raises(MissingExtraError, match=r"typeahead\[parquet\]"):
        rows(tmp_path / "q.parquet")


def test_build_index_reads_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    corpus: dict[str, Any] = {"query": ["weather", "weather radar", "web mail"],
                              "count": [30, 20, 10]}
    pq.write_table(pa.table(corpus), tmp_path / "log.parquet")
    res = subprocess.run([sys.executable, "-m", "typeahead", "build-index", "--corpus",
                          str(tmp_path / "log.parquet"), "--out", str(tmp_path / "idx"),
                          "--weight-col", "count", "--min-count", "1", "--no-vectors",
                          "--quiet"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    from typeahead.suggest.index import load_index

    assert load_index(tmp_path / "idx").entries == len(corpus["query"])
