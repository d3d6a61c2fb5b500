"""``/admin/rules``: operators block, pin and add suggestions live (admin token required).

| route | does |
|---|---|
| ``GET /admin/rules`` | the rules in force, their version and where they came from |
| ``POST /admin/rules`` | adds one rule (201) |
| ``DELETE /admin/rules/{id}`` | removes one (an unblock, an unpin) |
| ``GET /admin/rules/audit?limit=N`` | who changed what and when, newest first |
| ``GET /admin/rules/export`` | every rule as one document (keep it beside the index) |
| ``POST /admin/rules/import`` | replaces every rule with a document's (all or nothing) |

The author of a change is the ``X-Admin-User`` header (or a rule's ``author`` field), else
"admin". Every change reaches every API process within ``curation_poll_s``.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from typeahead.errors import InvalidBody, InvalidParameter
from typeahead.generation import REDIS_DOWN
from typeahead.http.curation import (
    Curation,
    export_document,
    new_rule_id,
    rules_from_document,
    unavailable,
)
from typeahead.http.reload import check_token
from typeahead.numbers import parse_int
from typeahead.safety.rules import MAX_AUTHOR_CHARS, parse_rule
from typeahead.settings import Settings

CURATION = web.AppKey("curation", Curation)
SETTINGS_KEY = web.AppKey("curation_settings", Settings)
MAX_AUDIT = 1000


def setup_curation_routes(app: web.Application, settings: Settings) -> None:
    app[SETTINGS_KEY] = settings
    app.router.add_get("/admin/rules", list_rules, allow_head=False)
    app.router.add_post("/admin/rules", add_rule)
    app.router.add_get("/admin/rules/audit", audit, allow_head=False)
    app.router.add_get("/admin/rules/export", export_rules, allow_head=False)
    app.router.add_post("/admin/rules/import", import_rules)
    app.router.add_delete("/admin/rules/{rule_id}", delete_rule)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _curation(request: web.Request) -> Curation:
    check_token(request, request.app[SETTINGS_KEY].admin_token)
    return request.app[CURATION]


def _author(request: web.Request, body: Any = None) -> str:
    author = request.headers.get("X-Admin-User")
    if author is None and isinstance(body, dict) and isinstance(body.get("author"), str):
        author = body["author"]
    author = " ".join((author or "admin").split())
    if len(author) > MAX_AUTHOR_CHARS or not author.isprintable():
        raise InvalidParameter(f"the author must be printable and at most {MAX_AUTHOR_CHARS} "
                               "characters")
    return author or "admin"


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody("request body is not valid JSON") from exc


async def list_rules(request: web.Request) -> web.Response:
    curation = _curation(request)
    rules = curation.rules
    return _json({"version": rules.version, "source": curation.source,
                  "rules": [r.to_json() for r in rules.rules]})


async def add_rule(request: web.Request) -> web.Response:
    curation = _curation(request)
    body = await _body(request)
    if isinstance(body, dict) and ("id" in body or "created_at" in body):
        raise InvalidBody('"id" and "created_at" are given by the server')
    author = _author(request, body)
    if isinstance(body, dict):
        body = {**body, "author": author}
    rule = parse_rule(body, new_rule_id(), curation.policy)
    version = await curation.change(lambda store: store.add(rule))
    return _json({"rule": rule.to_json(), "version": version}, status=201)


async def delete_rule(request: web.Request) -> web.Response:
    curation = _curation(request)
    rule_id = request.match_info["rule_id"]
    author = _author(request)
    version = await curation.change(lambda store: store.delete(rule_id, author))
    return _json({"deleted": rule_id, "version": version})


async def audit(request: web.Request) -> web.Response:
    curation = _curation(request)
    raw = request.query.get("limit", "100")
    try:
        limit = parse_int(raw, max_digits=6)
    except ValueError as exc:
        raise InvalidParameter(f"limit: {exc}") from None
    if not 1 <= limit <= MAX_AUDIT:
        raise InvalidParameter(f"limit must be between 1 and {MAX_AUDIT}, got {limit}")
    store = curation.writable()
    try:
        entries = await store.audit(limit)
    except REDIS_DOWN as exc:
        raise unavailable("read") from exc
    return _json({"entries": entries})


async def export_rules(request: web.Request) -> web.Response:
    curation = _curation(request)
    return _json(export_document(curation.rules.rules))


async def import_rules(request: web.Request) -> web.Response:
    curation = _curation(request)
    rules = rules_from_document(await _body(request), curation.policy)
    author = _author(request)
    version = await curation.change(lambda store: store.replace(rules, author))
    return _json({"imported": len(rules), "version": version})
