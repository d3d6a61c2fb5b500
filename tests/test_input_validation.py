"""Every numeric input goes through one strict parser, query text through one validator, and
bad command-line values are one line: no ``1_0``, ``+5+``, Unicode digits or 4,301-digit
integers anywhere, no NUL in a generate query, no silently sliced ``--limit -1``."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.fastpath_server import FastPathTestServer
from tests.gen_support import api_client, settings_for
from tests.lexical_fixtures import ROWS, build_small_index, write_tsv
from tests.redis_server import RedisServer
from typeahead.errors import ConfigError
from typeahead.generation.queue import stream_id
from typeahead.http.app import create_app
from typeahead.numbers import MAX_DIGITS, parse_float, parse_int
from typeahead.settings import Settings
from typeahead.suggest.service import SuggestService

BAD_INTEGERS = ["1_0", "+5", "+5+", "5+", " 5", "5 ", "", "-", "--1", "1e3", "0x10", "٥",
                "５", "1.0", "9" * (MAX_DIGITS + 1), "9" * 4301, "1\n", "\x001"]


@pytest.mark.parametrize("raw", BAD_INTEGERS)
def test_parse_int_refuses_what_int_accepts(raw: str) -> None:
    with pytest.raises(ValueError, match="ASCII digits"):
        parse_int(raw, negative=True)


def test_parse_int_accepts_plain_digits_and_negatives_only_when_asked() -> None:
    assert parse_int("0") == 0 and parse_int("050") == 50
    assert parse_int("9" * MAX_DIGITS) == int("9" * MAX_DIGITS)
    assert parse_int("-7", negative=True) == -7
    with pytest.raises(ValueError, match="non-negative"):
        parse_int("-7")


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1_0.5", "١.5", "1e999", "", ".", "e3",
                                 "0x1p3", " 1", "+1"])
def test_parse_float_refuses_non_finite_and_odd_spellings(raw: str) -> None:
    with pytest.raises(ValueError, match="finite"):
        parse_float(raw, negative=True)


def test_parse_float_accepts_plain_decimals() -> None:
    assert [parse_float(r) for r in ("3", "0.25", ".5", "5.", "1e-3", "2E2")] == \
        [3.0, 0.25, 0.5, 5.0, 0.001, 200.0]
    assert parse_float("-1.5", negative=True) == -1.5
    with pytest.raises(ValueError, match="non-negative"):
        parse_float("-1.5")


# --- HTTP: k on both paths, query text on suggest and generate -------------------------------


@pytest.fixture(params=["fastpath", "aiohttp"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TestClient]:
    app = create_app(Settings(generation=False), SuggestService(index=build_small_index(tmp_path)))
    server = FastPathTestServer(app) if request.param == "fastpath" else TestServer(app)
    async with TestClient(server) as c:
        yield c


@pytest.mark.parametrize("k", ["1_0", "+5+", "+5", "٥", "５", "9" * 4301, "%205"])
async def test_k_accepts_only_ascii_digits(client: TestClient, k: str) -> None:
    resp = await client.get("/v1/suggest?q=new&k=" + (k if k.startswith("%") else quote(k)))
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_parameter"
    assert (await client.get("/v1/suggest?q=new&k=5")).status == 200


async def test_generate_refuses_nul_like_suggest(redis_server: RedisServer) -> None:
    async with api_client(settings_for(redis_server.url)) as c:
        resp = await c.post("/v1/generate", data=orjson.dumps({"query": "what\x00is"}))
        assert resp.status == 400
        body = await resp.json()
        assert body["error"]["code"] == "invalid_parameter" and "NUL" in body["error"]["message"]


# --- settings and command-line flags ---------------------------------------------------------


@pytest.mark.parametrize(("var", "raw"), [
    ("TYPEAHEAD_PORT", "8_080"), ("TYPEAHEAD_WORKERS", "٢"), ("TYPEAHEAD_MAX_K", "+5+"),
    ("TYPEAHEAD_QUEUE_MAX_DEPTH", "9" * 4301), ("TYPEAHEAD_LLM_CONNECT_TIMEOUT_S", "nan"),
    ("TYPEAHEAD_JOB_DEADLINE_S", "inf"), ("TYPEAHEAD_LLM_READ_TIMEOUT_S", "1_0"),
])
def test_settings_refuse_odd_numbers_naming_the_variable(var: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=var):
        Settings.from_env(environ={var: raw})


def test_settings_still_take_plain_numbers() -> None:
    s = Settings.from_env(environ={"TYPEAHEAD_PORT": " 8081 ", "TYPEAHEAD_JOB_DEADLINE_S": "2.5"})
    assert s.port == 8081 and s.job_deadline_s == 2.5


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "typeahead", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(("args", "needle"), [
    (["eval", "retrieval", "--index", "x", "--queries", "q", "--text-col", "t",
      "--gold-col", "g", "--limit", "-1"], "--limit"),
    (["eval", "retrieval", "--index", "x", "--queries", "q", "--text-col", "t",
      "--gold-col", "g", "--limit", "0"], "must be >= 1"),
    (["eval", "retrieval", "--index", "x", "--queries", "q", "--text-col", "t",
      "--gold-col", "g", "--k", "1_0"], "--k"),
    (["eval", "qac", "--index", "x", "--log", "y", "--text-col", "q", "--k", "５"], "--k"),
    (["eval", "qac", "--index", "x", "--log", "y", "--text-col", "q",
      "--prefix-lengths", "2,1_0"], "comma-separated integers"),
    (["eval", "intent", "--labels", "x", "--text-col", "t", "--label-col", "l",
      "--threshold", "nan"], "--threshold"),
    (["serve", "--port", "8_080"], "--port"),
    (["serve", "--workers", "+2"], "--workers"),
    (["worker", "--concurrency", "9" * 4301], "--concurrency"),
    (["prewarm", "--log", "x", "--top", "1_0"], "--top"),
    (["prewarm", "--log", "x", "--top", "5", "--timeout", "-1"], "--timeout"),
    (["build-index", "--corpus", "c", "--out", "o", "--min-count", "1_0"], "--min-count"),
    (["eval", "intent", "--labels", "x", "--text-col", "t", "--label-col", "l", "--keystrokes",
      "--k", "1_0"], "--k"),
])
def test_numeric_flags_are_strict_and_one_line(args: list[str], needle: str) -> None:
    res = run_cli(*args)
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr


@pytest.mark.parametrize(("args", "needle"), [
    (["run", "--seed", "1_0"], "--seed"),
    (["run", "--generate-share", "1.5"], "--generate-share"),
    (["run", "--debounce-ms", "nan"], "--debounce-ms"),
])
def test_load_tester_flags_use_the_same_parser(args: list[str], needle: str) -> None:
    res = subprocess.run([sys.executable, "-m", "loadtest", *args], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr


def test_a_busy_port_is_one_line(tmp_path: Path) -> None:
    index = build_small_index(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = run_cli("serve", "--index", str(index.path), "--port", str(port))
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == [f"typeahead: cannot bind 127.0.0.1:{port}: Address already in use"], \
        res.stderr


def test_a_limit_scores_that_many_queries(tmp_path: Path) -> None:
    # The valid side of --limit still works (the fixture index has no documents, so the
    # command fails later, at loading them, not at the flag).
    corpus = write_tsv(tmp_path / "q.tsv", ROWS)
    res = run_cli("eval", "retrieval", "--index", str(tmp_path), "--queries", str(corpus),
                  "--text-col", "query", "--gold-col", "count", "--limit", "1")
    assert res.returncode == 1 and "--limit" not in res.stderr, res.stderr


@pytest.mark.parametrize("value", ["1_0-1", "٥-1", "1-+2", "+1-2", "9" * 4301, "1-" + "9" * 4301,
                                   "18446744073709551616-0", "-1", ""])
def test_a_last_event_id_goes_through_the_same_parser(value: str) -> None:
    assert stream_id(value) is None


def test_a_plain_last_event_id_is_a_pair() -> None:
    assert stream_id("1700000000000-3") == (1700000000000, 3)
    assert stream_id("18446744073709551615") == (2**64 - 1, 0)
