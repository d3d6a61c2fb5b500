"""Structured logs: JSON lines with the request id that the response header carries; query
text only at DEBUG with the explicit opt-in."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.lexical_fixtures import build_small_index
from typeahead import logs
from typeahead.http.app import create_app
from typeahead.settings import Settings
from typeahead.suggest.service import SuggestService

SECRET = "my private medical question"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = logs.configure(Settings(), stream=buf)
    try:
        yield buf
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


async def run_requests(tmp_path: Path, settings: Settings) -> list[Any]:
    app = create_app(settings, SuggestService(index=build_small_index(tmp_path), semantic=False))
    async with TestClient(TestServer(app)) as client:
        mine = await client.get(
            "/v1/suggest", params={"q": SECRET}, headers={"X-Request-ID": "req-42"}
        )
        fresh = await client.get("/v1/suggest", params={"q": "new"})
        bad = await client.get("/v1/suggest", params={"k": "0"})
        return [mine, fresh, bad]


async def test_json_lines_carry_the_request_id_and_no_query_at_info(
    tmp_path: Path,
    captured: io.StringIO,
) -> None:
    mine, fresh, bad = await run_requests(
        tmp_path, Settings(generation=False, semantic=False, suggest_log_sample=1.0))
    assert mine.headers["X-Request-ID"] == "req-42"
    generated = fresh.headers["X-Request-ID"]
    assert len(generated) == 32 and generated != "req-42"
    access = [e for e in lines(captured) if e["logger"] == "typeahead.access"]
    by_id = {e["request_id"]: e for e in access}
    assert by_id["req-42"]["status"] == 200 and by_id["req-42"]["route"] == "/v1/suggest"
    assert by_id["req-42"]["level"] == "info" and by_id["req-42"]["duration_ms"] >= 0
    assert by_id[generated]["method"] == "GET"
    assert by_id[bad.headers["X-Request-ID"]]["status"] == 400
    assert all({"ts", "level", "logger", "msg"} <= set(e) for e in lines(captured))
    assert SECRET not in captured.getvalue() and "private" not in captured.getvalue()


async def test_query_text_only_at_debug_with_opt_in(tmp_path: Path, captured: io.StringIO) -> None:
    # (the opt-in is read where the log handler is configured, as at start-up)
    handler = logs.configure(Settings(log_queries=True, log_level="DEBUG"), stream=captured)
    try:
        await run_requests(
            tmp_path, Settings(generation=False, semantic=False, log_queries=True,
                               log_level="DEBUG", suggest_log_sample=1.0)
        )
    finally:
        logging.getLogger().removeHandler(handler)
    entry = next(
        e
        for e in lines(captured)
        if e.get("request_id") == "req-42" and e["logger"] == "typeahead.access"
    )
    assert entry["level"] == "debug" and entry["query"] == SECRET


async def test_debug_alone_does_not_log_queries(tmp_path: Path, captured: io.StringIO) -> None:
    logging.getLogger().setLevel(logging.DEBUG)
    await run_requests(tmp_path, Settings(generation=False, semantic=False, log_level="DEBUG"))
    assert SECRET not in captured.getvalue()


def test_exceptions_and_extra_fields_are_json(captured: io.StringIO) -> None:
    log = logging.getLogger("typeahead.test")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed", extra={"job": "abc"})
    entry = lines(captured)[-1]
    assert entry["msg"] == "it failed" and entry["job"] == "abc" and "ValueError" in entry["exc"]
    assert "request_id" not in entry


async def test_successful_keystrokes_are_sampled_errors_never(tmp_path: Path,
                                                              captured: io.StringIO) -> None:
    mine, fresh, bad = await run_requests(
        tmp_path, Settings(generation=False, semantic=False, suggest_log_sample=0.0))
    logged = {e["request_id"] for e in lines(captured) if e["logger"] == "typeahead.access"}
    assert mine.headers["X-Request-ID"] not in logged
    assert fresh.headers["X-Request-ID"] not in logged
    assert bad.headers["X-Request-ID"] in logged  # a 400 is always logged


def test_the_redactor_keeps_request_lines_queries_and_credentials_out() -> None:
    buf = io.StringIO()
    handler = logs.configure(Settings(api_key_header="X-Client-Key"), stream=buf)
    log = logging.getLogger("typeahead.test")
    try:
        log.error("bad line b'GET /v1/suggest?q=secret1 HTTP/1.1' from %s", "1.2.3.4")
        log.warning("header Authorization: Bearer secret2 and X-Client-Key: secret3")
        log.info("see /v1/suggest?q=secret4", extra={"url": "/a?q=secret5", "query": "secret6"})
        try:
            raise ValueError("Cookie: session=secret7")
        except ValueError:
            log.exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    text = buf.getvalue()
    for n in range(1, 8):
        assert f"secret{n}" not in text
    entries = lines(buf)
    assert entries[0]["msg"] == "bad line b'<redacted>' from 1.2.3.4"
    assert "ValueError" in entries[-1]["exc"] and "query" not in entries[2]


def test_a_parser_exception_keeps_only_its_type() -> None:
    from aiohttp.http_exceptions import InvalidURLError

    buf = io.StringIO()
    handler = logs.configure(Settings(), stream=buf)
    try:
        try:
            raise InvalidURLError("/v1/suggest?q=secret8")
        except InvalidURLError:
            logging.getLogger("aiohttp.server").exception("Error handling request")
    finally:
        logging.getLogger().removeHandler(handler)
    [entry] = lines(buf)
    assert "InvalidURLError" in entry["exc"] and "secret8" not in buf.getvalue()
