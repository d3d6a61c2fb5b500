"""What to send and when: keystroke sessions from a query log, or a plain URL template.

A session is one user typing one query into a search box: keystrokes arrive at human speed,
and the box sends ``GET /v1/suggest?q=PREFIX`` only for keystrokes that survive the debounce
(no further key within ``debounce_ms``), ``debounce_ms`` after the key. A share of sessions
then clicks "generate" (``POST /v1/generate``) after a pause.

A plan is an iterator of ``(offset_s, kind, payload)`` sorted by offset: kind ``suggest``
(payload: the prefix), ``generate`` (the query) or ``plain`` (the URL).
"""

from __future__ import annotations

import heapq
import itertools
import math
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np

from loadtest.arrivals import arrival_times
from loadtest.errors import UsageError
from loadtest.querylog import QueryLog

Planned = tuple[float, str, str]

# Used when no --log is given: common web queries, so that a bare run has a sensible mix.
SAMPLE_QUERIES: tuple[tuple[str, float], ...] = (
    ("google", 100), ("weather", 60), ("ebay", 50), ("yahoo", 45), ("mapquest", 40),
    ("myspace", 35), ("american idol", 20), ("new york times", 15), ("bank of america", 15),
    ("how to tie a tie", 8), ("pizza near me", 8), ("world cup 2006", 8),
    ("harry potter books", 6), ("what is the capital of australia", 5),
    ("symptoms of the flu", 5), ("cheap flights to paris", 5), ("best digital camera", 4),
    ("history of the roman empire", 4), ("how does photosynthesis work", 3),
    ("lyrics bohemian rhapsody", 3),
)

# Sessions sampled to estimate the mean number of requests per session.
_CALIBRATION_SESSIONS = 2000


@dataclass(frozen=True, slots=True)
class Typing:
    keystroke_ms: float = 180.0  # median gap between keys (about 65 words per minute)
    jitter: float = 0.5  # sigma of the log-normal gap
    debounce_ms: float = 100.0
    think_ms: float = 1500.0  # median pause between the last key and a generate click


def keystroke_times(text: str, typing: Typing, rng: np.random.Generator) -> list[float]:
    """Offsets (seconds) of each key press; the first key is at 0."""
    if not text:
        return []
    median = typing.keystroke_ms / 1000.0
    gaps = median * np.exp(typing.jitter * rng.standard_normal(len(text) - 1))
    return [0.0, *np.cumsum(gaps).tolist()]


def debounced(times: Sequence[float], debounce_s: float) -> list[tuple[int, float]]:
    """``(key index, send offset)`` for the keys that survive the debounce.

    A key fires ``debounce_s`` after it is pressed unless the next key comes first.
    """
    fired = []
    for i, t in enumerate(times):
        is_last = i == len(times) - 1
        if is_last or times[i + 1] - t >= debounce_s:
            fired.append((i, t + debounce_s))
    return fired


@dataclass
class Sessions:
    """Keystroke sessions sampled by weight from a query log."""

    log: QueryLog
    typing: Typing = Typing()
    generate_share: float = 0.1
    new_share: float = 0.0  # share of generate clicks made unique, so they miss the cache
    generate_queries: tuple[str, ...] = ()  # if set, cached-mix clicks use these queries

    def __post_init__(self) -> None:
        for name in ("generate_share", "new_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UsageError(f"{name.replace('_', '-')} must be between 0 and 1")
        # A per-run tag keeps "new" queries new even when a run is repeated with one seed.
        self._run_tag = uuid.uuid4().hex[:8]
        self._new_count = 0

    def session(self, rng: np.random.Generator) -> list[Planned]:
        """One user's requests, offsets relative to the session start."""
        query = self.log.sample(rng)
        times = keystroke_times(query, self.typing, rng)
        plan: list[Planned] = [
            (at, "suggest", query[: i + 1])
            for i, at in debounced(times, self.typing.debounce_ms / 1000.0)
        ]
        if plan and rng.random() < self.generate_share:
            think = self.typing.think_ms / 1000.0 * math.exp(0.5 * rng.standard_normal())
            plan.append((plan[-1][0] + think, "generate", self._generate_query(query, rng)))
        return plan

    def _generate_query(self, query: str, rng: np.random.Generator) -> str:
        if rng.random() < self.new_share:
            self._new_count += 1
            return f"{query} {self._run_tag}{self._new_count}"
        if self.generate_queries:
            return self.generate_queries[int(rng.integers(len(self.generate_queries)))]
        return query

    def calibrate(self, seed: int) -> tuple[float, float]:
        """(mean requests per session, 99th percentile session length in seconds)."""
        rng = np.random.default_rng([seed, 1])
        sizes, lengths = [], []
        for _ in range(_CALIBRATION_SESSIONS):
            plan = self.session(rng)
            sizes.append(len(plan))
            lengths.append(plan[-1][0] if plan else 0.0)
        return max(1.0, float(np.mean(sizes))), float(np.percentile(lengths, 99))

    def plan(
        self, rate: float, duration: float, arrival: str, seed: int, stream: int = 0
    ) -> Iterator[Planned]:
        """Requests at about ``rate`` per second over ``[0, duration)``.

        Sessions start ``warm-up`` seconds before 0 so that the run begins in steady state
        (users already mid-query) instead of with everyone on their first key.
        """
        per_session, longest = self.calibrate(seed)
        starts = arrival_times(
            rate / per_session,
            arrival,
            np.random.default_rng([seed, stream, 2]),
            start=-longest,
            phase=_phase(stream),
        )
        content = np.random.default_rng([seed, stream, 3])
        return _merge_sessions(self, starts, content, duration)


def _merge_sessions(
    sessions: Sessions, starts: Iterator[float], rng: np.random.Generator, duration: float
) -> Iterator[Planned]:
    heap: list[tuple[float, int, str, str]] = []
    tie = itertools.count()
    next_start = next(starts)
    while True:
        # A session's requests all come after its start, so pending requests that precede
        # the next start are final.
        while next_start < duration and (not heap or next_start <= heap[0][0]):
            for offset, kind, payload in sessions.session(rng):
                heapq.heappush(heap, (next_start + offset, next(tie), kind, payload))
            next_start = next(starts)
        if not heap:
            return
        at, _, kind, payload = heapq.heappop(heap)
        if at >= duration:
            return
        if at >= 0:
            yield at, kind, payload


@dataclass(frozen=True)
class Plain:
    """Plain mode: one URL template with ``{value}`` filled from a list of values."""

    template: str
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.values and "{value}" not in self.template:
            raise UsageError("--url needs a {value} placeholder when --values is given")

    def url(self, rng: np.random.Generator) -> str:
        if not self.values:
            return self.template
        value = self.values[int(rng.integers(len(self.values)))]
        return self.template.replace("{value}", quote(value, safe=""))

    def plan(
        self, rate: float, duration: float, arrival: str, seed: int, stream: int = 0
    ) -> Iterator[Planned]:
        rng = np.random.default_rng([seed, stream, 4])
        times = arrival_times(
            rate, arrival, np.random.default_rng([seed, stream, 2]), phase=_phase(stream)
        )
        for at in times:
            if at >= duration:
                return
            yield at, "plain", self.url(rng)


Workload = Sessions | Plain


def _phase(stream: int) -> float:
    # Process i of N runs rate/N; golden-ratio phases keep constant schedules from aligning.
    return (stream * 0.6180339887) % 1.0
