"""The OpenAPI 3.1 description served at ``GET /openapi.json``.

Written by hand next to the handlers it describes; ``tests/test_openapi.py`` compares it with
the live router in both directions, so a route added without documentation (or documented
but gone) fails the build.
"""

from __future__ import annotations

from typing import Any

from typeahead.settings import Settings

JSON = "application/json"
ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    resp: dict[str, Any] = {"description": description,
                            "content": {JSON: {"schema": ERROR_REF}}}
    if retry_after:
        resp["headers"] = {"Retry-After": {"schema": {"type": "integer"},
                                           "description": "seconds to wait before retrying"}}
    return resp


def _ok(description: str, schema: dict[str, Any], media: str = JSON) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


STR = {"type": "string"}
NUM = {"type": "number"}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
TEXT = {"type": "string"}
BAD = _error("bad input: code missing_parameter, invalid_parameter, query_too_long, "
             "invalid_encoding or invalid_body")
UNAVAILABLE = _error("a dependency (Redis, the index) is not available", retry_after=True)
DEFAULT = _error("any other error: 404 not_found (no such route), 405 method_not_allowed "
                 "(with Allow), 408 request_timeout (a body slower than TYPEAHEAD_HEAD_TIMEOUT_S), "
                 "413 payload_too_large, 500 internal_error")
JOB_ID = {"name": "id", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}


def _schemas() -> dict[str, Any]:
    suggestion = _obj(["text", "score", "source"], text=STR, score=NUM,
                      source={"enum": ["prefix", "fuzzy", "semantic", "generated"]},
                      curated={"type": "boolean", "description": "present and true when an "
                               "operator's pin or add rule put the text there"},
                      matches={"type": "array", "description": "[start, end) character spans "
                               "of the text that matched the query",
                               "items": {"type": "array", "items": INT}})
    result = _obj(["id", "title", "snippet", "score"], id=STR, title=STR, snippet=STR, score=NUM)
    intent = {"type": ["object", "null"], "required": ["label", "confidence"], "properties": {
        "label": {"enum": ["navigational", "informational", "transactional"]},
        "confidence": NUM}}
    source = _obj(["n", "id", "title", "snippet"], n=INT, id=STR, title=STR, snippet=STR,
                  score=NUM)
    rule_types = {"enum": ["block_text", "block_word", "block_pattern", "pin", "add"]}
    rule_fields = {"type": rule_types, "text": STR, "note": STR,
                   "prefix": {"type": "string", "description": "pin only: the inputs (by "
                              "prefix) the pin applies to"},
                   "weight": {"type": "integer", "minimum": 1, "description": "add only: the "
                              "text ranks as an entry of this count would"}}
    return {
        "Rule": _obj(["id", "type", "text", "author", "created_at"], id=STR, author=STR,
                     created_at=NUM, **rule_fields),
        "NewRule": _obj(["type", "text"], author=STR, **rule_fields),
        "Rules": _obj(["version", "source", "rules"], version=INT,
                      source={"type": "string", "description": "redis, file (Redis down; the "
                              "copy beside the index) or memory (the last rules seen)"},
                      rules={"type": "array", "items": _ref("Rule")}),
        "RulesDocument": _obj(["kind", "format_version", "rules"], kind=STR, format_version=INT,
                              exported_at=NUM, rules={"type": "array", "items": _ref("Rule")}),
        "Error": _obj(["error"], error=_obj(["code", "message"], code=STR, message=STR)),
        "Suggestion": suggestion,
        "Result": result,
        "Suggest": _obj(["query", "suggestions", "results", "intent", "offer_generate"],
                        query=STR, suggestions={"type": "array", "items": _ref("Suggestion")},
                        results={"type": "array", "items": _ref("Result")}, intent=intent,
                        offer_generate=BOOL, took_us=INT),
        "Source": source,
        "GenerateDone": _obj(["id", "status", "summary", "sources", "cached"], id=STR,
                             status={"const": "done"}, summary=STR, cached=BOOL,
                             sources={"type": "array", "items": _ref("Source")}),
        "GenerateQueued": _obj(["id", "status", "stream_url"], id=STR, stream_url=STR,
                               status={"enum": ["queued", "running"]}),
        "Job": _obj(["id", "status"], id=STR, summary=STR, error=STR,
                    status={"enum": ["queued", "running", "done", "failed"]},
                    sources={"type": "array", "items": _ref("Source")}),
        "Ready": _obj(["status", "pid", "index", "checks"], status={"const": "ready"}, pid=INT,
                      index=_obj(["path", "entries"], path=STR, entries=INT, built_at=STR),
                      checks={"type": "object", "additionalProperties": STR}),
        "Reloaded": _obj(["status", "index", "workers", "switched"], status={"const": "reloaded"},
                         index=_obj(["path", "entries"], path=STR, entries=INT, built_at=STR),
                         workers=INT, switched=INT,
                         errors={"type": "object", "additionalProperties": STR}),
    }


def _suggest() -> dict[str, Any]:
    return {"get": {
        "summary": "suggestions, instant results and intent for a prefix",
        "operationId": "suggest",
        "parameters": [
            {"name": "q", "in": "query", "required": True,
             "schema": {"type": "string", "minLength": 1, "maxLength": 200}},
            {"name": "k", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10}},
        ],
        "responses": {"200": _ok("suggestions", _ref("Suggest")), "400": BAD,
                      "503": UNAVAILABLE},
    }}


def _generation() -> dict[str, Any]:
    return {
        "/v1/generate": {"post": {
            "summary": "ask for a grounded summary; cached answers return at once",
            "operationId": "generate",
            "requestBody": {"required": True, "content": {JSON: {"schema": _obj(
                ["query"], query={"type": "string", "minLength": 1, "maxLength": 200})}}},
            "responses": {
                "200": _ok("answered from the cache", _ref("GenerateDone")),
                "202": _ok("queued; follow stream_url", _ref("GenerateQueued")),
                "400": BAD, "413": _error("body too large"),
                "401": _error("an X-API-Key not among TYPEAHEAD_API_KEYS (invalid_api_key)"),
                "429": _error("rate limited", retry_after=True),
                "503": _error("queue full (queue_full) or Redis down", retry_after=True),
            }}},
        "/v1/generate/{id}": {"get": {
            "summary": "a job's status, with the summary once done",
            "operationId": "generate_status", "parameters": [JOB_ID],
            "responses": {"200": _ok("the job", _ref("Job")), "404": _error("no such job"),
                          "503": UNAVAILABLE}}},
        "/v1/generate/{id}/stream": {"get": {
            "summary": "server-sent events: token (text piece), reset (restart the text), "
                       "then done (data: the result JSON) or error (data: message)",
            "operationId": "generate_stream", "parameters": [JOB_ID],
            "responses": {"200": _ok("event stream", TEXT, "text/event-stream"),
                          "404": _error("no such job"), "503": UNAVAILABLE}}},
    }


def _operations() -> dict[str, Any]:
    return {
        "/healthz": {"get": {"summary": "liveness: the process answers", "operationId": "healthz",
                             "responses": {"200": _ok("alive", _obj(["status"], status=STR))}}},
        "/readyz": {"get": {
            "summary": "readiness: index loaded, Redis and the LLM reachable when configured",
            "operationId": "readyz",
            "responses": {"200": _ok("ready", _ref("Ready")),
                          "503": _error("not ready (code not_ready)", retry_after=True)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics",
                             "responses": {"200": _ok("text exposition format", TEXT,
                                                      "text/plain")}}},
        "/openapi.json": {"get": {"summary": "this document", "operationId": "openapi",
                                  "responses": {"200": _ok("OpenAPI 3.1", {"type": "object"})}}},
        "/admin/reload": {"post": {
            "summary": "switch every worker to a new index directory (or re-read the current)",
            "operationId": "admin_reload", "security": [{"adminToken": []}],
            "requestBody": {"required": False, "content": {JSON: {"schema": {
                "type": "object", "properties": {"index": STR}}}}},
            "responses": {"200": _ok("switched", _ref("Reloaded")), "400": BAD,
                          "401": _error("no admin token"),
                          "403": _error("wrong admin token, or none configured"),
                          "409": _error("another reload held the lock for 15 s, or the "
                                        "workers did not all follow (reload_conflict)"),
                          "422": _error("the new index does not load (index_rejected); the "
                                        "old one keeps serving")}}},
    }


RULE_ID = {"name": "rule_id", "in": "path", "required": True, "schema": STR}
ADMIN_ERRORS = {"401": _error("no admin token"),
                "403": _error("wrong admin token, or none configured")}
RULE_WRITE_ERRORS = {
    **ADMIN_ERRORS,
    "400": _error("a bad rule: invalid_rule (names the field), blocked_by_policy (a pin or "
                  "add the suggestion policy forbids), invalid_body"),
    "503": _error("Redis is down: rules cannot be changed (the last known rules stay in "
                  "force)", retry_after=True),
}


def _admin_op(summary: str, op_id: str, ok: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "operationId": op_id, "security": [{"adminToken": []}],
            "responses": {**ok, **ADMIN_ERRORS}, **extra}


def _curation() -> dict[str, Any]:
    body = {"required": True, "content": {JSON: {"schema": _ref("NewRule")}}}
    audit_entry = _obj(["id", "at", "author", "action", "rules"], id=STR, at=NUM, author=STR,
                       action={"enum": ["add", "delete", "import"]},
                       rules={"type": "array", "items": {"type": "object"}})
    return {
        "/admin/rules": {
            "get": _admin_op("the curation rules in force", "list_rules",
                             {"200": _ok("the rules", _ref("Rules"))}),
            "post": {**_admin_op(
                "block a text, word or pattern; pin a text first for a prefix; add a text",
                "add_rule", {"201": _ok("added", _obj(["rule", "version"], rule=_ref("Rule"),
                                                       version=INT))}, requestBody=body),
                "responses": {"201": _ok("added", _obj(["rule", "version"], rule=_ref("Rule"),
                                                       version=INT)), **RULE_WRITE_ERRORS}},
        },
        "/admin/rules/{rule_id}": {"delete": {**_admin_op(
            "remove a rule (unblock, unpin)", "delete_rule", {}, parameters=[RULE_ID]),
            "responses": {"200": _ok("deleted", _obj(["deleted", "version"], deleted=STR,
                                                     version=INT)),
                          "404": _error("no such rule (not_found)"), **RULE_WRITE_ERRORS}}},
        "/admin/rules/audit": {"get": {**_admin_op(
            "who changed which rules and when, newest first", "rules_audit", {},
            parameters=[{"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                    "default": 100}}]),
            "responses": {"200": _ok("entries", _obj(["entries"], entries={
                "type": "array", "items": audit_entry})), "400": BAD, **ADMIN_ERRORS,
                "503": UNAVAILABLE}}},
        "/admin/rules/export": {"get": _admin_op(
            "every rule as one document, to keep beside the index", "export_rules",
            {"200": _ok("the document", _ref("RulesDocument"))})},
        "/admin/rules/import": {"post": {**_admin_op(
            "replace every rule with a document's, all or nothing", "import_rules", {},
            requestBody={"required": True, "content": {JSON: {
                "schema": _ref("RulesDocument")}}}),
            "responses": {"200": _ok("imported", _obj(["imported", "version"], imported=INT,
                                                      version=INT)), **RULE_WRITE_ERRORS}}},
    }


def _pages() -> dict[str, Any]:
    return {
        "/": {"get": {"summary": "the demo search page", "operationId": "demo",
                      "responses": {"200": _ok("HTML", TEXT, "text/html")}}},
        "/static/{name}": {"get": {
            "summary": "the demo page's script, style sheet and icon", "operationId": "static",
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"enum": ["app.js", "app.css", "favicon.svg"]}}],
            "responses": {"200": _ok("the file", TEXT, "text/plain"),
                          "404": _error("no such file")}}},
    }


def spec(settings: Settings) -> dict[str, Any]:
    paths: dict[str, Any] = {"/v1/suggest": _suggest()}
    if settings.generation:
        paths.update(_generation())
    paths.update(_operations())
    paths.update(_curation())
    paths.update(_pages())
    for item in paths.values():
        for operation in item.values():
            operation["responses"].setdefault("default", DEFAULT)
    return {
        "openapi": "3.1.0",
        "info": {"title": "typeahead", "version": "1",
                 "description": "Latency-tiered hybrid search: suggestions in microseconds, "
                                "grounded summaries streamed. Every error is "
                                '{"error": {"code", "message"}}; 405 answers carry Allow, '
                                "and 404 answers an unknown route."},
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer",
                                               "description": "TYPEAHEAD_ADMIN_TOKEN"}},
        },
    }
