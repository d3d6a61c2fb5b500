from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from loadtest.arrivals import arrival_times
from loadtest.errors import UsageError
from loadtest.querylog import QueryLog, read_query_log
from loadtest.workload import Plain, Sessions, Typing, debounced, keystroke_times


def test_debounce_keeps_keys_followed_by_a_pause() -> None:
    times = [0.0, 0.05, 0.30, 0.35, 0.38, 0.60]
    fired = debounced(times, 0.1)
    # keys 1 (gap .25), 4 (gap .22) and the last fire; the others were typed over.
    assert fired == [(1, pytest.approx(0.15)), (4, pytest.approx(0.48)),
                     (5, pytest.approx(0.70))]
    assert debounced(times, 0.0) == [(i, t) for i, t in enumerate(times)]
    assert debounced([], 0.1) == []


def test_keystrokes_are_human_and_seeded() -> None:
    typing = Typing(keystroke_ms=200, jitter=0.3)
    a = keystroke_times("hello world", typing, np.random.default_rng(7))
    b = keystroke_times("hello world", typing, np.random.default_rng(7))
    assert a == b and len(a) == 11 and a[0] == 0.0
    gaps = np.diff(a)
    assert (gaps > 0).all() and 0.1 < float(np.median(gaps)) < 0.4


def _sessions(**kwargs: object) -> Sessions:
    log = QueryLog.from_pairs([("weather", 3), ("new york times", 1)])
    return Sessions(log, Typing(), **kwargs)  # type: ignore[arg-type]


def test_session_sends_growing_prefixes_then_maybe_generate() -> None:
    sessions = _sessions(generate_share=1.0)
    plan = sessions.session(np.random.default_rng(1))
    kinds = [kind for _, kind, _ in plan]
    assert kinds[-1] == "generate" and set(kinds[:-1]) == {"suggest"}
    prefixes = [payload for _, kind, payload in plan if kind == "suggest"]
    query = plan[-1][2]
    assert prefixes[-1] == query  # the final keystroke always fires
    assert all(query.startswith(p) for p in prefixes)
    assert [len(p) for p in prefixes] == sorted(len(p) for p in prefixes)
    offsets = [at for at, _, _ in plan]
    assert offsets == sorted(offsets)


def test_new_share_makes_unique_queries_and_generate_queries_are_used() -> None:
    new = _sessions(generate_share=1.0, new_share=1.0)
    rng = np.random.default_rng(2)
    queries = {new.session(rng)[-1][2] for _ in range(20)}
    assert len(queries) == 20
    warm = _sessions(generate_share=1.0, generate_queries=("prewarmed",))
    assert warm.session(np.random.default_rng(2))[-1][2] == "prewarmed"


def test_plan_is_sorted_reproducible_and_near_the_rate() -> None:
    sessions = _sessions(generate_share=0.2)
    plan = list(sessions.plan(200, 20, "poisson", seed=5))
    again = list(sessions.plan(200, 20, "poisson", seed=5))
    assert [p[:2] for p in plan] == [p[:2] for p in again]
    assert plan != list(sessions.plan(200, 20, "poisson", seed=6))
    offsets = [at for at, _, _ in plan]
    assert offsets == sorted(offsets) and offsets[0] >= 0 and offsets[-1] < 20
    assert 0.85 * 4000 < len(plan) < 1.15 * 4000
    # Steady state from the start: the first second already has its share of requests.
    assert sum(1 for t in offsets if t < 1) > 120


def test_constant_and_poisson_arrivals() -> None:
    rng = np.random.default_rng(0)
    gen = arrival_times(100, "constant", rng)
    assert [round(next(gen), 6) for _ in range(3)] == [0.0, 0.01, 0.02]
    gen = arrival_times(1000, "poisson", rng)
    times = [next(gen) for _ in range(20_000)]
    assert times[-1] == pytest.approx(20.0, rel=0.03)
    with pytest.raises(UsageError):
        arrival_times(0, "constant", rng)


def test_plain_mode_fills_and_quotes_values() -> None:
    plain = Plain("/v1/suggest?q={value}", ("a b", "c&d"))
    plan = list(plain.plan(100, 1, "constant", seed=0))
    assert len(plan) == 100
    assert {url for _, _, url in plan} == {"/v1/suggest?q=a%20b", "/v1/suggest?q=c%26d"}
    with pytest.raises(UsageError, match="placeholder"):
        Plain("/fast", ("x",))


@pytest.mark.parametrize("name", ["log.tsv", "log.csv.gz", "log.jsonl"])
def test_query_log_formats(tmp_path: Path, name: str) -> None:
    rows = [("ebay", 5), ('say "hi"', 2), ("", 9), ("zero", 0)]
    if ".tsv" in name:
        text = "query\tcount\n" + "".join(f"{q}\t{c}\n" for q, c in rows)
    elif ".csv" in name:
        text = "query,count\n" + "".join(f'"{q.replace(chr(34), 2 * chr(34))}",{c}\n'
                                         for q, c in rows)
    else:
        import json

        text = "".join(json.dumps({"query": q, "count": c}) + "\n" for q, c in rows)
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    log = read_query_log(path, "query", "count")
    assert log.texts == ("ebay", 'say "hi"')
    assert list(log.cumulative) == [5.0, 7.0]


def test_query_log_errors_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "log.tsv"
    path.write_text("q\tcount\nebay\tmany\n")
    with pytest.raises(UsageError, match="no column 'query'"):
        read_query_log(path, "query", None)
    with pytest.raises(UsageError, match="not a number"):
        read_query_log(path, "q", "count")
    with pytest.raises(UsageError, match=r"missing\.tsv: no such file"):
        read_query_log(tmp_path / "missing.tsv", "q", None)
    odd = tmp_path / "log.xml"
    odd.write_text("<x/>")
    with pytest.raises(UsageError, match="cannot tell the format"):
        read_query_log(odd, "q", None)
