"""Reading server-sent events: the one parser for every SSE client in the project.

The LLM client reads vLLM's ``data:`` chunks with it, the load tester reads the generate
streams with it, and the tests read the API's streams with it. The rules are those of the
WHATWG event-stream format:

- a line is ``field: value`` (one space after the colon is dropped, any further ones kept), a
  bare ``field`` (empty value), or a ``:`` comment (counted, never an event);
- ``data`` lines accumulate, joined by ``\\n``; ``event`` names the event (``message`` when
  absent); ``id`` sets the event's id; other fields are ignored;
- a blank line dispatches the event, or only resets the fields when no ``data`` came;
- an event whose blank line never came (the stream ended first) is dropped;
- lines end in ``\\n`` or ``\\r\\n``; text is UTF-8, an invalid byte becomes U+FFFD.

No I/O here: :func:`read_events` takes any async iterable of lines (an
``aiohttp.StreamReader`` iterates lines), :func:`parse_events` a body already read.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field

__all__ = ["Event", "Parser", "parse_events", "read_events"]


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event."""

    data: str
    event: str = "message"
    id: str = ""


@dataclass(slots=True)
class Parser:
    """Line-at-a-time parser; ``comments`` counts the comment lines seen (keep-alives)."""

    comments: int = 0
    _data: list[str] = field(default_factory=list)
    _event: str = ""
    _id: str = ""

    def feed(self, raw: bytes) -> Event | None:
        """Take one line; return the event it completes, if any."""
        line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, _, value = line.partition(":")
        self._field(name, value[1:] if value.startswith(" ") else value)
        return None

    def _field(self, name: str, value: str) -> None:
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value

    def _dispatch(self) -> Event | None:
        event = None
        if self._data:
            event = Event("\n".join(self._data), self._event or "message", self._id)
        self._data, self._event, self._id = [], "", ""
        return event


async def read_events(lines: AsyncIterable[bytes],
                      parser: Parser | None = None) -> AsyncIterator[Event]:
    """Yield each event of a stream of lines; pass ``parser`` to read its comment count."""
    parser = Parser() if parser is None else parser
    async for raw in lines:
        event = parser.feed(raw)
        if event is not None:
            yield event


def parse_events(body: bytes) -> list[Event]:
    """Every event of a complete stream body."""
    parser = Parser()
    events = (parser.feed(line) for line in body.split(b"\n"))
    return [event for event in events if event is not None]
