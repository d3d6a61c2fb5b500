"""Differential fuzzing of the keystroke fast path against aiohttp's own HTTP parsers.

Each case is a byte stream of one to three pipelined requests, each a browser-like keystroke
request, mutated or not (line endings, inserted/replaced/deleted bytes, header names and
values, duplicates, hidden framing headers, request-line variants, sizes around the limits),
delivered in one to eight reads. The real ``KeystrokeProtocol`` reads it (with a stand-in
site that answers every keystroke ``parse_head`` takes, the most permissive case); every
request it answers is then fed, in the same reads, to aiohttp's C parser (the one the server
runs) and its pure-Python parser. A disagreement is a request the fast path answered that
either parser refuses, or reads differently: method, target, version, keep-alive, upgrade,
body framing, the headers the fast path obeys (Host, X-Request-ID, Origin), or where the
request ends (a sentinel request must follow as its own message). What the fast path hands
over is aiohttp's to judge and cannot disagree.

``python -m tests.http_fuzz --count 100000`` (``make fuzz``) prints a results table;
``tests/test_fastpath_fuzz.py`` runs a smaller count.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import platform
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import HttpRequestParserC, HttpRequestParserPy

from typeahead.http.fastpath import HEAD_END, Keystroke, KeystrokeProtocol

SENTINEL = b"GET /sentinel HTTP/1.1\r\nHost: s\r\n\r\n"
QUERIES = ["q=new", "q=new%20y&k=3", "", "q=caf%C3%A9", "k=1&q=a", "q=a+b", "q=%ff", "q=",
           "q=new&q=x", "q=a%00", "q=\"x\"<y>", "q=a;b", "q=a?b", "q=~!$&'()*,"]
HEADERS = [("Accept", "*/*"), ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64)"),
           ("Accept-Language", "en-GB,en;q=0.9"), ("Origin", "https://a.example"),
           ("X-Request-ID", "abc-123"), ("Connection", "keep-alive"), ("Referer", "https://a/"),
           ("Cookie", "a=b"), ("Accept-Encoding", "gzip, deflate, br"), ("Sec-Fetch-Mode", "cors"),
           ("Cache-Control", "no-cache"), ("Pragma", "no-cache")]
CONNECTION_VALUES = ["close", "Close", "keep-alive", "keep-alive, close", "closed", "upgrade",
                     "te, close", "close ,", ", close", "close\t", "\tclose", "keep-alive,,close",
                     "", "CLOSE", "keep-alive, Upgrade", "x"]
FRAMING = [("Content-Length", "5"), ("Content-Length", "0"), ("Content-Length", "+5"),
           ("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "xchunked"),
           ("content-length", "3"), ("Content_Length", "3"), ("Upgrade", "websocket"),
           ("Expect", "100-continue"), ("Sec-WebSocket-Key1", "x"), ("Content-Encoding", "gzip")]
LINE_ENDS = [b"\n", b"\r", b"\r\r\n", b"\n\r", b"\r\n ", b"\r\n\t", b"\r\n\r\n", b""]
BYTES = bytes([*range(0, 0x21), 0x7F, 0x80, 0xC3, 0xA9, 0xFF]) + b":\"#?%\\;, \t/@<>{}|^`'"
METHODS = ["GET", "get", "POST", "HEAD", "GET ", " GET", "G@T", "OPTIONS", "PRI"]
VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "HTTP/0.9", "http/1.1", "HTTP/1.1 ",
            "HTTP/11", "HTTP/1.1\t", "HTTP/3.0", "HTTP/1"]
TARGETS = ["/v1/suggest", "/v1/suggest/", "/v1/Suggest", "//v1/suggest", "http://t/v1/suggest",
           "*", "/v1/suggest#f", "/v1/%73uggest", "/v1/suggest;x", " /v1/suggest"]


@dataclass
class Case:
    chunks: list[bytes]
    requests: int

    @property
    def payload(self) -> bytes:
        return b"".join(self.chunks)


@dataclass
class Results:
    cases: int = 0
    requests: int = 0
    answered: int = 0
    handed_over: int = 0
    refused_c: int = 0
    refused_py: int = 0
    disagreements: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    examples: list[tuple[str, bytes]] = field(default_factory=list)


# --- generation --------------------------------------------------------------------------------


def request(rng: random.Random) -> bytes:
    """One request, valid or mutated."""
    method, version = "GET", "HTTP/1.1"
    query = rng.choice(QUERIES)
    target = "/v1/suggest" + (f"?{query}" if query or rng.random() < 0.5 else "")
    headers = [("Host", "t"), *rng.sample(HEADERS, rng.randint(0, 6))]
    rng.shuffle(headers)
    body = b""
    for _ in range(rng.choice((0, 0, 0, 1, 1, 2, 3))):
        kind = rng.randrange(9)
        if kind == 0:
            method = rng.choice(METHODS)
        elif kind == 1:
            version = rng.choice(VERSIONS)
        elif kind == 2:
            target = rng.choice(TARGETS) + (f"?{query}" if query else "")
        elif kind == 3:
            headers.append(("Connection", rng.choice(CONNECTION_VALUES)))
        elif kind == 4:
            name, value = rng.choice(FRAMING)
            headers.append((name, value))
            body = b"x" * rng.choice((0, 3, 5))
        elif kind == 5 and headers:
            headers.insert(rng.randrange(len(headers) + 1), rng.choice(headers))  # a repeat
        elif kind == 6:
            count = rng.choice((50, 63, 64, 65, 126, 127, 128, 129, 130))
            headers += [(f"X-{i}", "a") for i in range(count)]
        elif kind == 7:
            size = rng.choice((4000, 8100, 8170, 8180, 8185, 8190, 8191, 8200))
            headers.append(("X-Pad", "a" * max(0, size - 7)))
        else:
            headers = [(name, f"{rng.choice(('', ' ', '  ', chr(9)))}{value}"
                        f"{rng.choice(('', ' ', chr(9), ' ' + chr(9)))}")
                       for name, value in headers]
            if rng.random() < 0.1:
                headers = [(f"{name}{rng.choice(('', ' ', '_', '.', '!'))}", value)
                           for name, value in headers]
    head = (f"{method} {target} {version}\r\n"
            + "".join(f"{n}: {v}\r\n" for n, v in headers)).encode("latin-1")
    for _ in range(rng.choice((0, 0, 0, 0, 1, 1, 2))):
        head = mutate_bytes(rng, head)
    return head + b"\r\n" + body


def mutate_bytes(rng: random.Random, head: bytes) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:  # a line end made bare, doubled or folded
        ends = [i for i in range(len(head) - 1) if head[i:i + 2] == b"\r\n"]
        if ends:
            at = rng.choice(ends)
            return head[:at] + rng.choice(LINE_ENDS) + head[at + 2:]
    at = rng.randrange(len(head) + 1)
    byte = bytes([rng.choice(BYTES)])
    if kind == 1:
        return head[:at] + byte + head[at:]
    if kind == 2:
        return head[:at] + byte + head[at + 1:]
    return head[:at] + head[at + 1:]


def case(rng: random.Random) -> Case:
    count = rng.choice((1, 1, 1, 2, 3))
    payload = b"".join(request(rng) for _ in range(count))
    cuts = sorted(rng.sample(range(1, len(payload)), min(len(payload) - 1,
                                                         rng.choice((0, 0, 0, 0, 1, 2, 7)))))
    bounds = [0, *cuts, len(payload)]
    return Case([payload[a:b] for a, b in itertools.pairwise(bounds)], count)


# --- the fast path -----------------------------------------------------------------------------


class _Handle:
    def cancel(self) -> None:
        pass


class _Loop:
    def time(self) -> float:
        return 0.0

    def call_at(self, when: float, callback: Any) -> _Handle:
        return _Handle()


class _Inner:
    """aiohttp's handler, as the fast path sees it: it only records what it is handed."""

    def __init__(self) -> None:
        self.received = b""

    def connection_made(self, transport: Any) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.received += data


class _Site:
    def __init__(self) -> None:
        self.connections: set[Any] = set()
        self.loop = _Loop()
        self.idle_timeout_s = 75.0
        self.taken: list[Keystroke] = []
        self.inner: _Inner | None = None

    def answer(self, keystroke: Keystroke) -> bytes:
        self.taken.append(keystroke)
        return b"answered"

    def handler(self) -> _Inner:
        self.inner = _Inner()
        return self.inner


class _Transport:
    def __init__(self) -> None:
        self.closed = False

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def fast_path(chunks: list[bytes]) -> tuple[list[Keystroke], bool]:
    """The keystrokes the fast path answers, and whether it handed the connection over."""
    site, transport = _Site(), _Transport()
    protocol = KeystrokeProtocol(site)  # type: ignore[arg-type]
    protocol.connection_made(transport)  # type: ignore[arg-type]
    for chunk in chunks:
        if transport.closed:
            break
        protocol.data_received(chunk)
    return site.taken, site.inner is not None


# --- the oracle --------------------------------------------------------------------------------

_LOOP = asyncio.new_event_loop()


def parse(kind: Any, chunks: list[bytes]) -> list[Any]:
    """aiohttp's messages for ``chunks``; raises what the parser raises."""
    parser = kind(BaseProtocol(_LOOP), _LOOP, 2**16, max_line_size=8190, max_headers=128,
                  max_field_size=8190)
    messages = []
    for chunk in chunks:
        found, _, _ = parser.feed_data(chunk)
        messages += found
    return messages


def disagreement(keystrokes: list[Keystroke], chunks: list[bytes], kind: Any) -> str | None:
    """Why ``kind`` reads the answered prefix differently from the fast path, or None."""
    payload = b"".join(chunks)
    end = 0
    for _ in keystrokes:
        end = payload.index(HEAD_END, end) + len(HEAD_END)
    prefix, at = [], 0
    for chunk in chunks:
        if at >= end:
            break
        prefix.append(chunk[:end - at])
        at += len(chunk)
    closes = bool(keystrokes) and keystrokes[-1].close
    try:
        messages = parse(kind, prefix if closes else [*prefix, SENTINEL])
    except Exception as exc:  # the parser refused what the fast path answered
        return f"refused: {type(exc).__name__}"
    if len(messages) != len(keystrokes) + (0 if closes else 1):
        return f"{len(messages)} messages for {len(keystrokes)} answered"
    if not closes and messages[-1][0].path != "/sentinel":
        return "the answered requests ended elsewhere"
    for (message, payload_reader), keystroke in zip(messages, keystrokes, strict=False):
        problem = differs(message, payload_reader, keystroke)
        if problem:
            return problem
    return None


def differs(message: Any, payload: Any, keystroke: Keystroke) -> str | None:
    checks = {
        "method": message.method == "GET",
        "version": tuple(message.version) == (1, 1),
        "path": message.url.path == "/v1/suggest" and message.path.startswith("/v1/suggest"),
        "query": message.url.raw_query_string == keystroke.query,
        "close": message.should_close == keystroke.close,
        "upgrade": not message.upgrade,
        "framing": not message.chunked and "Content-Length" not in message.headers
        and payload.is_eof(),
        "host": "Host" in message.headers,
        "request id": message.headers.get("X-Request-ID") == keystroke.request_id,
        "origin": message.headers.get("Origin") == keystroke.origin,
    }
    wrong = [name for name, ok in checks.items() if not ok]
    return f"reads {', '.join(wrong)} differently" if wrong else None


def accepts(kind: Any, chunks: list[bytes]) -> bool:
    try:
        parse(kind, chunks)
    except Exception:
        return False
    return True


def run(count: int, seed: int = 0) -> Results:
    """Generate cases until ``count`` requests have been tried."""
    rng = random.Random(seed)
    results = Results()
    while results.requests < count:
        one = case(rng)
        results.cases += 1
        results.requests += one.requests
        keystrokes, handed = fast_path(one.chunks)
        results.answered += len(keystrokes)
        results.handed_over += handed
        results.refused_c += not accepts(HttpRequestParserC, one.chunks)
        results.refused_py += not accepts(HttpRequestParserPy, one.chunks)
        for name, kind in (("C", HttpRequestParserC), ("Python", HttpRequestParserPy)):
            problem = disagreement(keystrokes, one.chunks, kind)
            if problem:
                results.disagreements += 1
                results.kinds[f"{name} parser {problem}"] += 1
                if len(results.examples) < 10:
                    results.examples.append((f"{name} parser {problem}", one.payload))
    return results


def table(results: Results, seconds: float) -> str:
    rows = [
        ("generated requests", f"{results.requests:,}"),
        ("byte streams (1-3 pipelined requests, 1-8 reads)", f"{results.cases:,}"),
        ("requests answered by the fast path", f"{results.answered:,}"),
        ("streams handed over to aiohttp", f"{results.handed_over:,}"),
        ("streams aiohttp's C parser refuses", f"{results.refused_c:,}"),
        ("streams aiohttp's Python parser refuses", f"{results.refused_py:,}"),
        ("**disagreements**", f"**{results.disagreements}**"),
        ("seconds", f"{seconds:.1f}"),
    ]
    lines = ["| measure | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    lines += [f"| disagreement: {kind} | {n} |" for kind, n in results.kinds.most_common()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="requests to generate")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = run(args.count, args.seed)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
          f"Python {platform.python_version()}, seed {args.seed}")
    print(table(results, time.perf_counter() - started))
    for why, payload in results.examples:
        print(f"- {why}: {payload[:300]!r}")
    return 1 if results.disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
