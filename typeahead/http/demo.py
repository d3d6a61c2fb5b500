"""``GET /``: the demo search page, and its script and style sheet from ``typeahead/http/static``.

Everything is served from the package (no CDN). The page is locked down by a
Content-Security-Policy that allows only this origin's script, style and API, and no inline
script at all; the script itself renders every string with ``textContent``.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from typeahead.errors import NotFound
from typeahead.http import limits
from typeahead.http.limits import CSP

TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
ASSETS = ("app.js", "app.css", "favicon.svg")
SECURITY_HEADERS = {
    **limits.SECURITY_HEADERS,
    "Content-Security-Policy": CSP,
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
STATIC = web.AppKey("static_files", dict)


def _read(name: str) -> bytes:
    return resources.files("typeahead.http").joinpath("static", name).read_bytes()


def _asset(app: web.Application, name: str) -> web.Response:
    cache: dict[str, bytes] = app[STATIC]
    if name not in cache:
        try:
            cache[name] = _read(name)
        except OSError as exc:
            raise NotFound(f"demo asset {name} is not installed") from exc
    headers = {**SECURITY_HEADERS, "Content-Type": TYPES[name], "Cache-Control": "no-cache"}
    return web.Response(body=cache[name], headers=headers)


async def page(request: web.Request) -> web.Response:
    return _asset(request.app, "index.html")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise NotFound(f"no static file {name[:40]!r}")
    return _asset(request.app, name)


def setup_demo(app: web.Application) -> None:
    app[STATIC] = {}
    app.router.add_get("/", page, allow_head=False)
    app.router.add_get("/static/{name}", static, allow_head=False)
