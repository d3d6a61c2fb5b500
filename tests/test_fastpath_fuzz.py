"""Differential fuzzing of the keystroke fast path against aiohttp's C and Python parsers
(``tests/http_fuzz.py``): no request the fast path answers may be one either parser refuses
or reads differently. A few thousand requests here; ``make fuzz`` runs 100,000."""

from __future__ import annotations

import os

from tests import http_fuzz
from typeahead.http.fastpath import parse_head

COUNT = int(os.environ.get("TYPEAHEAD_FUZZ_FASTPATH_REQUESTS", "3000"))


def test_the_fast_path_never_reads_a_request_differently_from_aiohttp() -> None:
    results = http_fuzz.run(COUNT, seed=int(os.environ.get("TYPEAHEAD_FUZZ_SEED", "1")))
    assert results.disagreements == 0, (results.kinds, results.examples[:3])
    # The generator must exercise both sides: answered keystrokes and refused requests.
    assert results.answered > COUNT // 20 and results.refused_c > COUNT // 20


def test_the_oracle_catches_a_lenient_reader() -> None:
    """The checker itself: a fast path that ignored bare LFs would be caught."""
    smuggled = (b"GET /v1/suggest?q=a HTTP/1.1\r\nHost: t\nContent-Length: 5\r\n\r\n"
                b"GET /x")
    keystroke = parse_head(b"GET /v1/suggest?q=a HTTP/1.1\r\nHost: t")
    assert keystroke is not None
    for kind in (http_fuzz.HttpRequestParserC, http_fuzz.HttpRequestParserPy):
        assert http_fuzz.disagreement([keystroke], [smuggled], kind) is not None
