"""The rules a query's text must meet, wherever it arrives.

``GET /v1/suggest?q=…`` and ``POST /v1/generate`` take the same kind of text, so one function
checks both: a query the one refuses, the other must refuse the same way (NUL bytes, for one,
would otherwise reach the logs, Redis keys and the LLM prompt through the body).
"""

from __future__ import annotations

from typeahead.errors import InvalidParameter, MissingParameter, QueryTooLong


def check_query(text: str, limit: int, *, name: str) -> str:
    """``text`` unchanged when it is a valid query of at most ``limit`` characters; else the
    client error, naming the parameter or field ``name``."""
    if not text.strip():
        raise MissingParameter(f"{name} must not be empty")
    if len(text) > limit:
        raise QueryTooLong(f"{name} is {len(text)} characters; the limit is {limit}")
    if "\x00" in text:
        raise InvalidParameter(f"{name} must not contain NUL characters")
    return text
