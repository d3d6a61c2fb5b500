"""The one server-sent-events reader: its rules, and that it reads what the API writes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from typeahead.generation.hub import KEEP_ALIVE, sse
from typeahead.sse import Event, Parser, parse_events, read_events


def test_fields_comments_and_blank_lines() -> None:
    body = (b": keep-alive\n\n"
            b"id: 7-1\nevent: token\ndata: a\ndata: b\n\n"
            b"data:no-space\ndata:  two spaces\n\n"
            b"event: ping\n\n"  # no data: not an event, and its name does not leak
            b"data\nretry: 10\nunknown: x\n\n"
            b"event: done\r\ndata: {}\r\n\r\n")
    assert parse_events(body) == [
        Event("a\nb", "token", "7-1"),
        Event("no-space\n two spaces"),
        Event(""),
        Event("{}", "done"),
    ]


def test_an_event_without_its_blank_line_is_dropped_and_bad_utf8_is_replaced() -> None:
    assert parse_events(b"data: \xff\n\ndata: cut off") == [Event("\ufffd")]


def test_comments_are_counted() -> None:
    parser = Parser()
    assert [parser.feed(line) for line in KEEP_ALIVE.split(b"\n")[:2]] == [None, None]
    assert parser.comments == 1


def test_it_reads_what_the_api_writes() -> None:
    body = KEEP_ALIVE + sse("token", " leading space", "1-0") + sse("token", "x\ny", "1-1")
    assert parse_events(body) == [Event(" leading space", "token", "1-0"),
                                  Event("x\ny", "token", "1-1")]


async def test_read_events_takes_an_async_stream_of_lines() -> None:
    async def lines() -> AsyncIterator[bytes]:
        for line in (b"event: token\n", b"data: t\n", b"\n", b": ka\n", b"data: [DONE]\n", b"\n"):
            yield line

    parser = Parser()
    assert [e async for e in read_events(lines(), parser)] == [Event("t", "token"),
                                                                 Event("[DONE]")]
    assert parser.comments == 1
