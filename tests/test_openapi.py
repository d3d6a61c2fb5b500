"""GET /openapi.json against the live router: every route documented, every documented route
exists, with the method it is documented for."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.lexical_fixtures import build_small_index
from typeahead.http.app import create_app
from typeahead.settings import Settings
from typeahead.suggest.service import SuggestService


def live_routes(app: web.Application) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method == "HEAD":
            continue
        routes.add((resource.canonical, route.method.lower()))
    return routes


def documented(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in spec["paths"].items() for method in item}


@pytest.mark.parametrize("generation", [False, True])
async def test_spec_matches_the_router(tmp_path: Path, generation: bool) -> None:
    settings = Settings(generation=generation, semantic=False, redis_url="redis://127.0.0.1:1")
    app = create_app(settings, SuggestService(index=build_small_index(tmp_path)))
    # Only the routes matter here: the generation tier's Redis is never started.
    app.cleanup_ctx.clear()
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/openapi.json")
        assert resp.status == 200 and resp.content_type == "application/json"
        spec = await resp.json()
    assert spec["openapi"].startswith("3.")
    assert documented(spec) == live_routes(app)
    assert ("/v1/generate", "post") in documented(spec) if generation else True


async def test_every_operation_documents_parameters_responses_and_errors(tmp_path: Path) -> None:
    app = create_app(
        Settings(generation=True, semantic=False), SuggestService(index=build_small_index(tmp_path))
    )
    app.cleanup_ctx.clear()
    async with TestClient(TestServer(app)) as client:
        spec = await (await client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for method, op in item.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (path, method)
            assert op["summary"] and op["operationId"]
            assert "default" in op["responses"] and any(c.startswith("2") for c in op["responses"])
            for resp in op["responses"].values():
                assert resp["description"]
                for media in resp.get("content", {}).values():
                    ref = media["schema"].get("$ref")
                    assert ref is None or ref.rsplit("/", 1)[1] in schemas
    suggest = spec["paths"]["/v1/suggest"]["get"]
    assert {p["name"] for p in suggest["parameters"]} == {"q", "k"}
    assert {"200", "400", "503"} <= set(suggest["responses"])
    reload = spec["paths"]["/admin/reload"]["post"]
    assert {"401", "403", "422"} <= set(reload["responses"])
