"""``typeahead aggregate``: a small raw log counted by hand, each input format, and bad input."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from typeahead.cli import main
from typeahead.corpus import read_rows
from typeahead.errors import ConfigError
from typeahead.suggest.aggregate import AggregateOptions, aggregate
from typeahead.suggest.index import merge_rows

duckdb = pytest.importorskip("duckdb")

# (user, query as typed, time). By hand, per normalised key:
#   google      rows 1-4 and 9: 5 submissions, users u1 u2 u3 (u1 twice) -> 3 users; most
#               typed form "google" (2: "google" and " google  " display alike) over
#               "Google" (2: ties go to the later form in sort order, "google") and "GOOGLE" (1)
#   café        "Café", "cafe", "CAFE", "café": 4 submissions by u1 u2 u3 u4 -> 4 users;
#               forms Café 1, cafe 1, CAFE 1, café 1 -> the later in sort order: "café"
#   my secret   one user, 3 times -> 3 submissions, 1 user: under the floor of 3 users
#   two people  u1 and u2: 2 users, under the floor
#   (blank)     empty after normalisation: dropped
LOG = [
    ("u1", "Google", "2006-03-01 10:00:00"),
    ("u2", "google", "2006-03-01 11:00:00"),
    ("u3", " google  ", "2006-03-02 09:00:00"),
    ("u1", "GOOGLE", "2006-03-02 10:00:00"),
    ("u1", "Café", "2006-03-01 10:00:00"),
    ("u2", "cafe", "2006-03-01 10:00:00"),
    ("u3", "CAFE", "2006-03-03 10:00:00"),
    ("u4", "café", "2006-03-03 11:00:00"),
    ("u2", "Google", "2006-03-04 10:00:00"),
    ("u5", "my secret", "2006-03-01 10:00:00"),
    ("u5", "my secret", "2006-03-01 10:01:00"),
    ("u5", "My Secret", "2006-03-01 10:02:00"),
    ("u1", "two people", "2006-03-01 10:00:00"),
    ("u2", "two people", "2006-03-01 10:00:00"),
    ("u3", "   ", "2006-03-01 10:00:00"),
]
WITH_USERS = "query\tcount_total\tusers\ngoogle\t5\t3\ncafé\t4\t4\n"
WITHOUT_USERS = ("query\tcount_total\ngoogle\t5\ncafé\t4\nmy secret\t3\ntwo people\t2\n")


def write_tsv(path: Path) -> Path:
    lines = ["AnonID\tQuery\tQueryTime"] + ["\t".join(row) for row in LOG]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl_gz(path: Path) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for user, query, time in LOG:
            fh.write(json.dumps({"AnonID": user, "Query": query, "QueryTime": time}) + "\n")
    return path


def write_csv(path: Path) -> Path:
    rows = ["AnonID,Query,QueryTime"] + [f'{u},"{q}",{t}' for u, q, t in LOG]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def write_parquet(path: Path, tsv: Path) -> Path:
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * FROM read_csv('{tsv}', delim='\t', quote='', header=true, "
                f"all_varchar=true)) TO '{path}' (FORMAT parquet)")
    con.close()
    return path


USERS = AggregateOptions(query_col="Query", user_col="AnonID")


def test_hand_computed_counts_users_floor_and_normalisation(tmp_path: Path) -> None:
    out = tmp_path / "counts.tsv"
    report = aggregate([write_tsv(tmp_path / "log.tsv")], out, USERS)
    assert out.read_text(encoding="utf-8") == WITH_USERS
    assert (report.rows, report.texts, report.queries, report.kept) == (15, 12, 4, 2)


def test_without_users_every_query_is_counted(tmp_path: Path) -> None:
    out = tmp_path / "counts.tsv"
    aggregate([write_tsv(tmp_path / "log.tsv")], out, AggregateOptions(query_col="Query"))
    assert out.read_text(encoding="utf-8") == WITHOUT_USERS


def test_floor_flags(tmp_path: Path) -> None:
    log = write_tsv(tmp_path / "log.tsv")
    out = tmp_path / "counts.tsv"
    aggregate([log], out, AggregateOptions(query_col="Query", user_col="AnonID", min_users=1,
                                           min_count=3))
    assert out.read_text(encoding="utf-8").splitlines()[1:] == [
        "google\t5\t3", "café\t4\t4", "my secret\t3\t1"]


def test_time_window(tmp_path: Path) -> None:
    out = tmp_path / "counts.tsv"
    aggregate([write_tsv(tmp_path / "log.tsv")], out,
              AggregateOptions(query_col="Query", user_col="AnonID", time_col="QueryTime",
                               since="2006-03-02", until="2006-03-04", min_users=1))
    # 03-02: " google  " (u3), "GOOGLE" (u1); 03-03: "CAFE" (u3), "café" (u4).
    assert out.read_text(encoding="utf-8").splitlines()[1:] == [
        "café\t2\t2", "google\t2\t2"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl.gz", "parquet", "tsv.gz-out"])
def test_every_input_format_counts_alike(tmp_path: Path, fmt: str) -> None:
    tsv = write_tsv(tmp_path / "log.tsv")
    logs = {"csv": lambda: write_csv(tmp_path / "log.csv"),
            "jsonl.gz": lambda: write_jsonl_gz(tmp_path / "log.jsonl.gz"),
            "parquet": lambda: write_parquet(tmp_path / "log.parquet", tsv),
            "tsv.gz-out": lambda: tsv}
    out = tmp_path / ("counts.tsv.gz" if fmt == "tsv.gz-out" else "counts.tsv")
    aggregate([logs[fmt]()], out, USERS)
    if out.name.endswith(".gz"):
        with gzip.open(out, "rt", encoding="utf-8") as fh:
            text = fh.read()
    else:
        text = out.read_text(encoding="utf-8")
    assert text == WITH_USERS


def test_several_files_and_a_small_memory_limit(tmp_path: Path) -> None:
    first, second = tmp_path / "a.tsv", tmp_path / "b.tsv"
    write_tsv(first)
    write_tsv(second)
    out = tmp_path / "counts.tsv"
    spill = tmp_path / "spill"
    aggregate([tmp_path / "*.tsv"], out, AggregateOptions(
        query_col="Query", user_col="AnonID", memory_limit="64MB", temp_dir=spill, threads=1))
    assert out.read_text(encoding="utf-8").splitlines()[1:] == ["google\t10\t3", "café\t8\t4"]


def test_build_index_reads_the_counts_as_the_same_keys(tmp_path: Path) -> None:
    out = tmp_path / "counts.tsv"
    aggregate([write_tsv(tmp_path / "log.tsv")], out, AggregateOptions(query_col="Query"))
    merged, _ = merge_rows(read_rows(out, text_col="query", weight_col="count_total"))
    assert {k: m.weight for k, m in merged.items()} == {
        "google": 5.0, "cafe": 4.0, "my secret": 3.0, "two people": 2.0}
    assert merged["cafe"].display() == "café"


def test_missing_duckdb_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "duckdb", None)
    with pytest.raises(ConfigError, match=r"typeahead\[aggregate\]"):
        aggregate([write_tsv(tmp_path / "log.tsv")], tmp_path / "o.tsv", USERS)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "typeahead", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--user-col", "user"], 1, "no column 'user' for --user-col (columns: AnonID, Query"),
        (["--query-col", "query"], 1, "no column 'query' for --query-col"),
        (["--user-col", "AnonID", "--since", "2006-03-01"], 2, "--since/--until need --time-col"),
        (["--time-col", "AnonID", "--since", "2006-03-01"], 1, "Conversion Error"),
        (["--min-users", "0"], 2, "--min-users"),
        (["--memory-limit", "lots"], 2, "DuckDB refused the settings"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], code: int, needle: str) -> None:
    log = write_tsv(tmp_path / "log.tsv")
    res = run_cli("aggregate", "--log", str(log), "--out", str(tmp_path / "o.tsv"),
                  "--query-col", "Query", *args)
    assert res.returncode == code, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "o.tsv").exists()


@pytest.mark.parametrize(
    ("log", "out", "code", "needle"),
    [
        ("missing.tsv", "o.tsv", 1, "missing.tsv: no such file"),
        ("log.tsv", "o.csv", 2, "expected a .tsv or .tsv.gz"),
        ("log.tsv", "log.tsv", 2, "is one of the --log files"),
        ("log.unknown", "o.tsv", 1, "cannot tell the format"),
        ("log.tsv", "dir.tsv", 2, "is a directory"),
    ],
)
def test_bad_paths_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], log: str,
                                out: str, code: int, needle: str) -> None:
    write_tsv(tmp_path / "log.tsv")
    (tmp_path / "log.unknown").write_text("x\n", encoding="utf-8")
    (tmp_path / "dir.tsv").mkdir()
    assert main(["aggregate", "--log", str(tmp_path / log), "--out", str(tmp_path / out)]) == code
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_output_is_sorted_by_count_then_query_with_threads(tmp_path: Path) -> None:
    # Enough distinct queries that DuckDB's threads would hand rows back in any order.
    log = tmp_path / "log.tsv"
    lines = ["query"] + [f"q{i % 997}" for i in range(40_000)] + [f"q{i}" for i in range(300)]
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "counts.tsv"
    aggregate([log], out, AggregateOptions(threads=2))
    rows = [line.split("\t") for line in out.read_text(encoding="utf-8").splitlines()[1:]]
    assert len(rows) == 997
    assert rows == sorted(rows, key=lambda r: (-int(r[1]), r[0]))
    assert rows[0] == ["q0", "42"]
