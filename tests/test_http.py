from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.fastpath_server import FastPathTestServer
from tests.lexical_fixtures import build_small_index
from typeahead.http.app import create_app
from typeahead.settings import Settings
from typeahead.suggest.service import SuggestService


@pytest.fixture(params=["fastpath", "aiohttp"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TestClient]:
    """Every test here runs twice: through the keystroke fast path that ``typeahead serve``
    uses, and through aiohttp alone; both must give the same contract."""
    index = build_small_index(tmp_path)
    app = create_app(Settings(generation=False), SuggestService(index=index))
    server = FastPathTestServer(app) if request.param == "fastpath" else TestServer(app)
    async with TestClient(server) as c:
        yield c


async def error_of(resp) -> str:  # type: ignore[no-untyped-def]
    body = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    return str(body["error"]["code"])


async def test_suggest_contract_fields(client: TestClient) -> None:
    resp = await client.get("/v1/suggest", params={"q": "new y", "k": "2"})
    assert resp.status == 200
    body = await resp.json()
    assert body["query"] == "new y"
    assert [s["text"] for s in body["suggestions"]] == ["new york times", "new york city"]
    for s in body["suggestions"]:
        assert set(s) >= {"text", "score", "source"} and s["source"] == "prefix"
        assert s["matches"] == [[0, 5]]
    assert body["results"] == [] and body["intent"] is None and body["offer_generate"] is False
    assert resp.headers["X-Request-ID"]


async def test_default_k_and_unicode(client: TestClient) -> None:
    body = await (await client.get("/v1/suggest", params={"q": "café"})).json()
    assert body["suggestions"][0]["text"] == "Café Crème Paris"


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("", 400, "missing_parameter"),
        ("?q=", 400, "missing_parameter"),
        ("?q=%20%20", 400, "missing_parameter"),
        ("?q=" + "a" * 201, 400, "query_too_long"),
        ("?q=a&k=0", 400, "invalid_parameter"),
        ("?q=a&k=51", 400, "invalid_parameter"),
        ("?q=a&k=ten", 400, "invalid_parameter"),
        ("?q=a&k=1e3", 400, "invalid_parameter"),
        ("?q=%ff%fe", 400, "invalid_encoding"),
        ("?q=%00abc", 400, "invalid_parameter"),
    ],
)
async def test_suggest_bad_input(client: TestClient, query: str, status: int, code: str) -> None:
    resp = await client.get("/v1/suggest" + query)
    assert resp.status == status
    assert await error_of(resp) == code


async def test_exactly_200_characters_is_fine(client: TestClient) -> None:
    resp = await client.get("/v1/suggest", params={"q": "n" * 200})
    assert resp.status == 200


async def test_unknown_route_and_wrong_method(client: TestClient) -> None:
    resp = await client.get("/v2/nothing")
    assert resp.status == 404 and await error_of(resp) == "not_found"
    resp = await client.post("/v1/suggest", data=b"x")
    assert resp.status == 405 and await error_of(resp) == "method_not_allowed"
    assert resp.headers["Allow"] == "GET"


async def test_health_and_readiness(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200 and body["index"]["entries"] > 0


async def test_not_ready_without_index(tmp_path: Path) -> None:
    from typeahead.http.app import SERVICE

    # A service-less app whose loader never ran: the state of a worker still starting up.
    app = create_app(Settings(index_dir=tmp_path / "missing", generation=False),
                     SuggestService.__new__(
        SuggestService))
    app[SERVICE].current = None
    async with TestClient(TestServer(app)) as c:
        resp = await c.get("/readyz")
        assert resp.status == 503 and await error_of(resp) == "not_ready"
        assert resp.headers["Retry-After"]
        assert (await c.get("/healthz")).status == 200


async def test_request_id_is_echoed_when_sane(client: TestClient) -> None:
    resp = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"
    resp = await client.get("/healthz", headers={"X-Request-ID": "x" * 200})
    assert resp.headers["X-Request-ID"] != "x" * 200


async def test_suggest_carries_the_intent_decision(tmp_path: Path) -> None:
    from typeahead.intent.classifier import LABELS, IntentClassifier

    index = build_small_index(tmp_path)
    service = SuggestService(index=index, intent=IntentClassifier.load())
    app = create_app(Settings(generation=False), service)
    async with TestClient(TestServer(app)) as c:
        nav = await (await c.get("/v1/suggest", params={"q": "google maps"})).json()
        info = await (await c.get("/v1/suggest",
                                  params={"q": "what is the history of the steam engine"})).json()
        mail = await (await c.get("/v1/suggest", params={"q": "what is jane@example.com"})).json()
    for body in (nav, info, mail):
        assert body["intent"]["label"] in LABELS
        assert 0.0 <= body["intent"]["confidence"] <= 1.0
        assert isinstance(body["offer_generate"], bool)
    assert nav["offer_generate"] is False
    assert info["offer_generate"] is True
    assert mail["offer_generate"] is False  # personal data never gets an offer
