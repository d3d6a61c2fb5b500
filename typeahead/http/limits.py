"""Abuse limits at the HTTP edge: request bodies, per-client rate limits, CORS, security headers.

``setup_limits(app, settings)`` registers the response hook (CORS and security headers);
``limits_middleware`` goes in ``create_app``'s middleware list *inside* the error middleware, so
what it raises is rendered as ``{"error": ...}``. It does two string comparisons for a GET, so
``/v1/suggest`` pays nothing measurable.

For ``POST /v1/generate`` the middleware names the client (``client_of``) that the generate
route's rate limits (``typeahead.http.ratelimit``, shared through Redis) charge. The client is
a configured API key (``TYPEAHEAD_API_KEYS``) when the request sends one, else the peer
address: an unknown key is refused (401) when keys are configured and ignored when none are,
because a key nobody checks would let a client take a fresh budget per request.
``X-Forwarded-For`` is ignored because any client can forge it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from typeahead.errors import (
    InvalidBody,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
    UndecodableBody,
    UnsupportedMediaType,
)
from typeahead.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

GENERATE_PATH = "/v1/generate"
MAX_JSON_DEPTH = 16
BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))

# The one policy for HTML: the demo page loads its script and style from files, so no inline
# script is allowed, and it talks only to this origin's API.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
CORS_EXPOSE = "Retry-After, X-Request-ID"
CORS_MAX_AGE_S = "600"


class Limits:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.origins = frozenset(settings.cors_origins)
        # Digests, not the keys: a membership test then reveals nothing through its timing.
        self.api_keys = frozenset(_digest(key) for key in settings.api_keys)

    def client_key(self, request: web.Request) -> str:
        api_key = request.headers.get(self.settings.api_key_header)
        if api_key and self.api_keys:
            digest = _digest(api_key)
            if digest not in self.api_keys:
                raise Unauthorized(f"unknown API key in {self.settings.api_key_header}",
                                   code="invalid_api_key")
            return "key:" + digest
        return "addr:" + (request.remote or "unknown")

    def allowed_origin(self, origin: str | None) -> str | None:
        if not origin or not self.origins:
            return None
        if origin in self.origins:
            return origin
        return "*" if "*" in self.origins else None

    def cors_headers(self, origin: str | None) -> tuple[tuple[str, str], ...]:
        """The CORS headers of an answer to a request from ``origin``; none when CORS is off
        or the origin is not allowed. (Both request paths, aiohttp and the keystroke fast
        path, render these.)"""
        allowed = self.allowed_origin(origin)
        if allowed is None:
            return ()
        return (("Access-Control-Allow-Origin", allowed),
                ("Access-Control-Expose-Headers", CORS_EXPOSE), ("Vary", "Origin"))


def _digest(api_key: str) -> str:
    # aiohttp hands undecodable header bytes over as surrogate escapes: hash them as sent.
    return hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).hexdigest()


LIMITS: web.AppKey[Limits] = web.AppKey("limits", Limits)
CLIENT: web.RequestKey[str] = web.RequestKey("client", str)  # as Limits.client_key names it


def setup_limits(app: web.Application, settings: Settings) -> None:
    app[LIMITS] = Limits(settings)
    app.on_response_prepare.append(_on_prepare)


# --- the middleware ---------------------------------------------------------------------------


@web.middleware
async def limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    method = request.method
    if method == "GET":
        return await handler(request)  # the hot path: /v1/suggest
    limits = request.app.get(LIMITS)
    if limits is None:
        return await handler(request)
    if method == "OPTIONS":
        preflight = _preflight(request, limits)
        if preflight is not None:
            return preflight
    elif method in BODY_METHODS and request.match_info.http_exception is None:
        # (an unknown route or method gets the router's 404/405, not a body complaint)
        if request.path == GENERATE_PATH:
            request[CLIENT] = limits.client_key(request)  # an unknown API key: 401 here
        await check_json_body(request, limits.settings.max_body_bytes,
                              limits.settings.head_timeout_s)
    return await handler(request)


def client_of(request: web.Request) -> str:
    """The client a generate request is charged to (named by the middleware)."""
    return request.get(CLIENT) or "addr:" + (request.remote or "unknown")


async def check_json_body(request: web.Request, max_bytes: int, timeout_s: float) -> None:
    """413 over the size limit, 415 for a body that is not JSON, 400 when nested too deep,
    408 when the body does not arrive within ``timeout_s`` (a trickling client).

    The body is read here once; aiohttp keeps it, so the handler's ``read()`` costs nothing.
    """
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(f"request body is {length} bytes; the limit is {max_bytes}")
    if not request.body_exists:
        return
    if not _is_json(request.content_type):
        raise UnsupportedMediaType(
            f"request body must be application/json, got {request.content_type or 'none'!r}")
    try:
        async with asyncio.timeout(timeout_s):
            raw = await request.read()  # aiohttp stops at client_max_size with a 413
    except TimeoutError:
        request.protocol.close()  # the rest of the body may still trickle in: stop reading
        raise RequestTimeout(f"the request body did not arrive within {timeout_s:g} s") \
            from None
    except ConnectionResetError:
        # The client hung up mid-body (a slow client giving up): its fault, not ours.
        raise InvalidBody("the client closed the connection before sending its whole body",
                          code="incomplete_body") from None
    except web.RequestPayloadError as exc:
        # A body that does not decode (a bad deflate/gzip stream, broken chunking): nothing
        # more of it can be read, so mark it consumed (aiohttp would otherwise drain it again
        # after the answer and log the same failure as an unhandled exception), and close
        # the connection after the answer: the parser cannot find the next request on it.
        request.content.feed_eof()
        request.protocol.close()
        raise UndecodableBody(f"the request body could not be decoded ({_reason(exc)})") \
            from None
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body is over {max_bytes} bytes")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return  # the handler names the syntax error
    if json_depth(value, MAX_JSON_DEPTH + 1) > MAX_JSON_DEPTH:
        raise InvalidBody(f"JSON nested deeper than {MAX_JSON_DEPTH} levels",
                          code="json_too_deep")


def _reason(exc: web.RequestPayloadError) -> str:
    # aiohttp's message reads "400, message:\n  Can not decode content-encoding: deflate".
    return " ".join(str(exc).split(", message:")[-1].split()) or "malformed body"


def _is_json(content_type: str) -> bool:
    # request.content_type is the bare media type, lower-cased, without parameters.
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json"))


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), counting no further than limit."""
    depth = 0
    level = [value]
    while depth < limit:
        containers = [item for item in level if isinstance(item, dict | list)]
        if not containers:
            break
        depth += 1
        level = [child for c in containers for child in (c.values() if isinstance(c, dict) else c)]
    return depth


# --- CORS and security headers ----------------------------------------------------------------


def _preflight(request: web.Request, limits: Limits) -> web.Response | None:
    origin = limits.allowed_origin(request.headers.get("Origin"))
    wanted = request.headers.get("Access-Control-Request-Method")
    if origin is None or wanted is None:
        return None  # not an allowed preflight: the router answers (405)
    headers = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "GET, POST",
        "Access-Control-Allow-Headers": f"Content-Type, {limits.settings.api_key_header}, "
                                        "X-Request-ID, Last-Event-ID",
        "Access-Control-Max-Age": CORS_MAX_AGE_S,
        "Vary": "Origin",
    }
    return web.Response(status=204, headers=headers)


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    for name, value in SECURITY_HEADERS.items():
        headers.setdefault(name, value)
    if response.content_type == "text/html":
        headers.setdefault("Content-Security-Policy", CSP)
    limits = request.app.get(LIMITS)
    if limits is None or not limits.origins:
        return  # CORS is off by default: no Access-Control headers at all
    for name, value in limits.cors_headers(request.headers.get("Origin")):
        if name == "Vary":
            headers.add(name, value)  # Vary lists every header caches key on: add, not replace
        else:
            headers[name] = value
