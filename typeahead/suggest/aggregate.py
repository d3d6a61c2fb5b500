"""``typeahead aggregate``: raw query-log rows into the counts file ``build-index`` reads.

A log holds one row per submission: the query, and optionally who sent it and when. DuckDB
counts it out of core (a memory limit, spilling to a temporary directory), so a log larger
than memory is counted on one machine; ``docs/scale-out.md`` has the same job for Spark.

Counting is by the index's own matching key (``typeahead.normalize``), not by raw text: the
distinct-user floor must see "Google" and "google " as one query, or a query typed two ways by
three people could pass it twice with fewer. The key is computed once per distinct raw text,
never per row. The written ``query`` is the form submitted most often (``display_form``), so
``build-index`` normalises it back to the same key and keeps the casing users typed.

Privacy: where the log names users, a query is kept only if at least ``--min-users`` distinct
users sent it (default 3, the project's serving floor); a user who repeats a query raises its
count but not its users. Without a user column the floor falls to ``build-index --min-count``,
which counts submissions.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typeahead.corpus import detect_format
from typeahead.errors import ConfigError, DataError
from typeahead.normalize import display_form, normalize
from typeahead.numbers import int_arg

LOG_FORMATS = ("tsv", "csv", "jsonl", "parquet")
EXTRA = "aggregate"


@dataclass(frozen=True, slots=True)
class AggregateOptions:
    query_col: str = "query"
    user_col: str | None = None
    time_col: str | None = None
    since: str | None = None
    until: str | None = None
    min_users: int = 3
    min_count: int = 1
    fmt: str | None = None
    memory_limit: str = "2GB"
    temp_dir: Path | None = None
    threads: int | None = None


@dataclass(frozen=True, slots=True)
class AggregateReport:
    rows: int
    texts: int
    queries: int
    kept: int

    def summary(self) -> str:
        return (f"{self.rows:,} rows, {self.texts:,} distinct texts, {self.queries:,} queries "
                f"after normalisation, {self.kept:,} kept")


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="count a raw query log into a counts file for build-index",
                       description="Count raw query-log rows (one per submission) into a TSV "
                                   "of query, count_total[, users] with DuckDB, out of core. "
                                   "Build the index from it with --weight-col count_total.")
    p.add_argument("--log", type=Path, nargs="+", required=True, metavar="FILE",
                   help="TSV, CSV, JSONL (.gz ok) or Parquet files, or globs DuckDB expands")
    p.add_argument("--out", type=Path, required=True, help="counts file to write (.tsv or .tsv.gz)")
    p.add_argument("--format", choices=LOG_FORMATS, default=None, help="override format detection")
    p.add_argument("--query-col", default="query", help="column holding the query (default: query)")
    p.add_argument("--user-col", default=None,
                   help="column naming the user; enables the distinct-user floor")
    p.add_argument("--time-col", default=None,
                   help="column holding the submission time, for --since/--until")
    p.add_argument("--since", default=None, help="count rows at or after this time (ISO 8601)")
    p.add_argument("--until", default=None, help="count rows before this time (ISO 8601)")
    p.add_argument("--min-users", type=int_arg(1), default=3,
                   help="privacy floor: keep a query only if this many distinct users sent it "
                        "(needs --user-col; default: 3)")
    p.add_argument("--min-count", type=int_arg(1), default=1,
                   help="keep a query only if it was submitted this many times (default: 1)")
    p.add_argument("--memory-limit", default="2GB",
                   help="DuckDB memory limit; beyond it, work spills to --temp-dir (default: 2GB)")
    p.add_argument("--temp-dir", type=Path, default=None,
                   help="where DuckDB spills (default: a fresh directory in the system temp)")
    p.add_argument("--threads", type=int_arg(1), default=None,
                   help="DuckDB threads (default: one per core)")
    p.add_argument("--quiet", action="store_true", help="no summary on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = AggregateOptions(
        query_col=args.query_col, user_col=args.user_col, time_col=args.time_col,
        since=args.since, until=args.until, min_users=args.min_users, min_count=args.min_count,
        fmt=args.format, memory_limit=args.memory_limit, temp_dir=args.temp_dir,
        threads=args.threads)
    report = aggregate(args.log, args.out, options)
    if not args.quiet:
        if options.user_col is None:
            print("typeahead: no --user-col: the distinct-user floor was not applied; "
                  "build-index --min-count applies the submission floor", file=sys.stderr)
        print(f"typeahead: {report.summary()} -> {args.out}", file=sys.stderr)
    return 0


def aggregate(logs: Sequence[Path], out: Path, options: AggregateOptions) -> AggregateReport:
    """Count ``logs`` into ``out`` (written whole, then renamed into place)."""
    _check_options(logs, out, options)
    fmt = options.fmt or _detect(logs[0])
    duckdb = _import_duckdb()
    with _spill_dir(options.temp_dir) as spill, _connect(duckdb, options, spill) as con:
        try:
            return _count(con, logs, fmt, out, options)
        except duckdb.Error as exc:
            raise DataError(f"{_names(logs)}: {_first_line(exc)}") from exc


def _check_options(logs: Sequence[Path], out: Path, options: AggregateOptions) -> None:
    if (options.since or options.until) and options.time_col is None:
        raise ConfigError("--since/--until need --time-col")
    if not out.name.endswith((".tsv", ".tsv.gz")):
        raise ConfigError(f"--out {out}: expected a .tsv or .tsv.gz file name")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory")
    for log in logs:
        if not _is_glob(log) and not log.is_file():
            raise DataError(f"{log}: no such file")
        if not _is_glob(log) and log.resolve() == out.resolve():
            raise ConfigError(f"--out {out} is one of the --log files")


def _detect(path: Path) -> str:
    if path.name.lower().endswith(".parquet"):
        return "parquet"
    return detect_format(path)


def _import_duckdb() -> Any:
    try:
        import duckdb
    except ImportError:
        raise ConfigError(f"typeahead aggregate needs DuckDB: pip install "
                          f"'typeahead[{EXTRA}]'") from None
    return duckdb


@contextmanager
def _spill_dir(temp_dir: Path | None) -> Iterator[Path]:
    if temp_dir is not None:
        temp_dir.mkdir(parents=True, exist_ok=True)
        yield temp_dir
        return
    with tempfile.TemporaryDirectory(prefix="typeahead-aggregate-") as tmp:
        yield Path(tmp)


@contextmanager
def _connect(duckdb: Any, options: AggregateOptions, spill: Path) -> Iterator[Any]:
    config = {"memory_limit": options.memory_limit, "temp_directory": str(spill),
              "preserve_insertion_order": "false"}
    if options.threads is not None:
        config["threads"] = str(options.threads)
    try:
        con = duckdb.connect(":memory:", config=config)
    except duckdb.Error as exc:
        raise ConfigError(f"DuckDB refused the settings: {_first_line(exc)}") from exc
    try:
        con.create_function("ta_key", normalize, ["VARCHAR"], "VARCHAR", side_effects=False)
        con.create_function("ta_shown", display_form, ["VARCHAR"], "VARCHAR", side_effects=False)
        yield con
    finally:
        con.close()


def _count(con: Any, logs: Sequence[Path], fmt: str, out: Path,
           options: AggregateOptions) -> AggregateReport:
    con.execute(f"CREATE TEMP VIEW raw_log AS SELECT * FROM {_reader(logs, fmt)}")
    _check_columns(con, logs, options)
    _count_pairs(con, options)
    con.execute("CREATE TEMP TABLE texts AS SELECT q, sum(n) AS n FROM pairs GROUP BY q")
    # The only Python step: one call per distinct raw text, not per row.
    con.execute("CREATE TEMP TABLE keyed AS SELECT q, n, ta_key(q) AS k, ta_shown(q) AS shown "
                "FROM texts")
    con.execute(_QUERIES_SQL)
    users = options.user_col is not None
    if users:
        con.execute("CREATE TEMP TABLE key_users AS SELECT keyed.k, count(DISTINCT pairs.u) AS "
                    "users FROM pairs JOIN keyed USING (q) WHERE keyed.k <> '' GROUP BY keyed.k")
    kept = _write(con, out, options, users=users)
    return AggregateReport(rows=_scalar(con, "SELECT coalesce(sum(n), 0) FROM texts"),
                           texts=_scalar(con, "SELECT count(*) FROM texts"),
                           queries=_scalar(con, "SELECT count(*) FROM queries"), kept=kept)


# Per key: the submissions, and the form written most often (ties: the later in sort order,
# as build-index picks a display form).
_QUERIES_SQL = """
CREATE TEMP TABLE queries AS
WITH forms AS (
    SELECT k, shown, sum(n) AS n FROM keyed WHERE k <> '' GROUP BY k, shown
), ranked AS (
    SELECT k, shown, n, sum(n) OVER (PARTITION BY k) AS total,
           row_number() OVER (PARTITION BY k ORDER BY n DESC, shown DESC) AS pick
    FROM forms
)
SELECT k, shown, total FROM ranked WHERE pick = 1
"""


def _reader(logs: Sequence[Path], fmt: str) -> str:
    files = "[" + ", ".join(_literal(str(p)) for p in logs) + "]"
    if fmt == "parquet":
        return f"read_parquet({files}, union_by_name = true)"
    if fmt == "jsonl":
        return f"read_json({files}, format = 'newline_delimited', union_by_name = true)"
    if fmt == "csv":
        return f"read_csv({files}, header = true, delim = ',', all_varchar = true)"
    # TSV query logs carry stray quotes (as typeahead.corpus reads them: no quoting).
    return (f"read_csv({files}, header = true, delim = '\t', quote = '', escape = '', "
            f"all_varchar = true, null_padding = true)")


def _check_columns(con: Any, logs: Sequence[Path], options: AggregateOptions) -> None:
    have = [row[0] for row in con.execute("DESCRIBE raw_log").fetchall()]
    for flag, col in (("--query-col", options.query_col), ("--user-col", options.user_col),
                      ("--time-col", options.time_col)):
        if col is not None and col not in have:
            raise DataError(f"{_names(logs)}: no column {col!r} for {flag} "
                            f"(columns: {', '.join(have)})")


def _count_pairs(con: Any, options: AggregateOptions) -> None:
    """One pass over the log: rows per (query, user), or per query when there are no users."""
    q = f"CAST({_ident(options.query_col)} AS VARCHAR)"
    where = [f"{q} IS NOT NULL", *_time_window(options)]
    user = (f"CAST({_ident(options.user_col)} AS VARCHAR)" if options.user_col
            else "CAST(NULL AS VARCHAR)")
    con.execute(f"CREATE TEMP TABLE pairs AS SELECT {q} AS q, {user} AS u, count(*) AS n "
                f"FROM raw_log WHERE {' AND '.join(where)} GROUP BY ALL")


def _time_window(options: AggregateOptions) -> list[str]:
    if options.time_col is None:
        return []
    t = f"CAST({_ident(options.time_col)} AS TIMESTAMP)"
    bounds = []
    if options.since:
        bounds.append(f"{t} >= CAST({_literal(options.since)} AS TIMESTAMP)")
    if options.until:
        bounds.append(f"{t} < CAST({_literal(options.until)} AS TIMESTAMP)")
    return bounds


def _write(con: Any, out: Path, options: AggregateOptions, *, users: bool) -> int:
    floor = [f"q.total >= {options.min_count}"]
    if users:
        floor.append(f"ku.users >= {options.min_users}")
    select = ("SELECT q.shown AS query, q.total AS count_total" +
              (", ku.users AS users FROM queries q JOIN key_users ku USING (k)" if users
               else " FROM queries q") +
              f" WHERE {' AND '.join(floor)}")
    con.execute(f"CREATE TEMP TABLE kept AS {select}")
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial{_suffix(out)}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # Ordered in the COPY itself: tables keep no order (preserve_insertion_order is off).
        con.execute(f"COPY (SELECT * FROM kept ORDER BY count_total DESC, query) TO "
                    f"{_literal(str(partial))} (FORMAT csv, DELIMITER '\t', "
                    f"HEADER true, QUOTE '', ESCAPE '')")
        partial.replace(out)
    except OSError as exc:
        raise DataError(f"--out {out}: cannot write: {exc.strerror or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return _scalar(con, "SELECT count(*) FROM kept")


def _suffix(out: Path) -> str:
    # DuckDB picks gzip from the file name.
    return ".tsv.gz" if out.name.endswith(".gz") else ".tsv"


def _scalar(con: Any, sql: str) -> int:
    return int(con.execute(sql).fetchone()[0])


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_glob(path: Path) -> bool:
    return any(c in str(path) for c in "*?[")


def _names(logs: Sequence[Path]) -> str:
    return str(logs[0]) if len(logs) == 1 else f"{logs[0]} (+{len(logs) - 1} more)"


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
