"""The HTTP API: the aiohttp application, the keystroke fast path beneath it, the
multi-process server, abuse limits, readiness, hot reload, curation routes, the OpenAPI
document and the demo page. Nothing here is imported by another tier."""
