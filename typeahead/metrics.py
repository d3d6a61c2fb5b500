"""Prometheus metrics: what every process records, and the ``/metrics`` exposition.

One ``Metrics`` object per process, created on first use (never at import time) in its own
registry. Several processes behind one port (``typeahead serve --workers N``) use
prometheus-client's *multiprocess mode*: the supervisor points ``PROMETHEUS_MULTIPROC_DIR`` at
a fresh directory before it starts anything, every process (API workers and the embedded
generation worker) writes its samples to memory-mapped files there, and whichever API worker
answers ``GET /metrics`` merges them all. A single process without that variable keeps plain
in-memory metrics and also exports the standard ``process_*`` collectors.

Recording is on the hot path of every request, so handlers call the pre-bound children
cached here (a dict lookup and a lock, about a microsecond) instead of ``labels()``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import resource
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# From 50 µs: a suggest call answers in well under a millisecond, so millisecond-wide buckets
# would hide everything that matters; the long tail reaches event streams that last a minute.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005,
    0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


def multiprocess_dir() -> Path | None:
    raw = os.environ.get(MULTIPROC_ENV, "")
    return Path(raw) if raw else None


class Metrics:
    """Every metric typeahead exports, registered in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = multiprocess_dir() is not None
        r = self.registry
        self.request_seconds = Histogram(
            "typeahead_http_request_duration_seconds", "HTTP request latency by route",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter(
            "typeahead_http_requests", "HTTP requests by route and status",
            ["route", "method", "status"], registry=r)
        self.cache = Counter(
            "typeahead_generate_cache", "POST /v1/generate answered from the summary cache "
            "(hit) or queued for generation (miss)", ["result"], registry=r)
        self.queue_depth = Gauge(
            "typeahead_generate_queue_depth", "generation jobs waiting in the Redis queue "
            "(sampled when /metrics is scraped)", registry=r, multiprocess_mode="livemostrecent")
        self.job_starts = Counter(
            "typeahead_generate_job_starts", "new generation jobs by where they run: inline "
            "(in the API process that created them) or queue (a worker)", ["runner"], registry=r)
        self.rate_limited_total = Counter(
            "typeahead_generate_rate_limited", "POST /v1/generate refused (429) by a client's "
            "budget: requests (every request) or jobs (requests that would start a job)",
            ["budget"], registry=r)
        self.rate_limit_fallbacks = Counter(
            "typeahead_generate_rate_limit_fallback", "rate-limit decisions this process made "
            "from its own buckets because Redis was down or silent", registry=r)
        self.job_seconds = Histogram(
            "typeahead_generate_job_duration_seconds", "time a worker spent on a job, by outcome",
            ["outcome"], buckets=JOB_BUCKETS, registry=r)
        self.ttft_seconds = Histogram(
            "typeahead_llm_time_to_first_token_seconds", "time from asking the LLM backend to "
            "its first text piece", ["model"], buckets=TTFT_BUCKETS, registry=r)
        self.llm_requests = Counter(
            "typeahead_llm_endpoint_requests", "requests sent to each LLM endpoint (retries "
            "included)", ["endpoint"], registry=r)
        self.llm_errors = Counter(
            "typeahead_llm_endpoint_errors", "failures of each LLM endpoint: requests that "
            "could not connect, timed out, broke or answered 5xx, and failed /health probes",
            ["endpoint", "kind"], registry=r)
        self.llm_outstanding = Gauge(
            "typeahead_llm_endpoint_outstanding", "requests open on each LLM endpoint",
            ["endpoint"], registry=r, multiprocess_mode="livesum")
        self.llm_ejected = Gauge(
            "typeahead_llm_endpoint_ejected", "1 while an LLM endpoint is ejected (after "
            "consecutive failures, until a /health probe succeeds)", ["endpoint"], registry=r,
            multiprocess_mode="livemax")
        self.index_entries = Gauge(
            "typeahead_index_entries", "suggestions in the loaded index", registry=r,
            multiprocess_mode="livemax")
        self.index_build_seconds = Gauge(
            "typeahead_index_build_seconds", "how long the loaded index took to build "
            "(from its manifest)", registry=r, multiprocess_mode="livemax")
        self.index_load_seconds = Gauge(
            "typeahead_index_load_seconds", "how long this process took to load its index",
            registry=r, multiprocess_mode="livemax")
        self.reloads = Counter(
            "typeahead_index_reloads", "index reload attempts by outcome", ["outcome"],
            registry=r)
        self.suggestions_removed = Counter(
            "typeahead_suggestions_removed", "suggestions removed at serve time, by category: "
            "curated (an operator's block rule) or a policy category (an index built under "
            "another policy); counted when an answer is computed, not for cached answers",
            ["category"], registry=r)
        self.index_blocked = Gauge(
            "typeahead_index_blocked_entries", "entries the suggestion policy removed when the "
            "loaded index was built, by category", ["category"], registry=r,
            multiprocess_mode="livemax")
        self.curation_rules = Gauge(
            "typeahead_curation_rules", "curation rules this process applies", registry=r,
            multiprocess_mode="livemax")
        self.memory_bytes = Gauge(
            "typeahead_process_resident_memory_bytes", "resident memory of each process",
            ["role"], registry=r, multiprocess_mode="liveall")
        self.max_memory_bytes = Gauge(
            "typeahead_process_max_resident_memory_bytes", "peak resident memory of each "
            "process", ["role"], registry=r, multiprocess_mode="liveall")
        if not self.multiprocess:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        # Suggestions removed at serve time, by category, since the last flush.
        self.removed_pending: dict[str, int] = {}
        self._route_children: dict[tuple[str, str], Any] = {}
        self._status_children: dict[tuple[str, str, int], Any] = {}

    # --- the hot path -----------------------------------------------------------------------

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method)
        hist = self._route_children.get(key)
        if hist is None:
            hist = self._route_children[key] = self.request_seconds.labels(route, method)
        hist.observe(seconds)
        skey = (route, method, status)
        count = self._status_children.get(skey)
        if count is None:
            count = self._status_children[skey] = self.requests.labels(route, method,
                                                                        str(status))
        count.inc()

    def flush(self) -> None:
        """Move the counts kept aside on the hot path into their counters: each scrape, and
        every second in every process (``sample_forever``). A counter update costs 1-4 µs
        on a keystroke, a plain dict update 0.1."""
        pending = self.removed_pending
        if pending:
            counts = dict(pending)
            pending.clear()  # in place: the curation overlays hold this dict
            for category, n in counts.items():
                self.suggestions_removed.labels(category).inc(n)

    # --- everything else --------------------------------------------------------------------

    def index_screened(self, by_category: dict[str, int]) -> None:
        for category, count in by_category.items():
            self.index_blocked.labels(category).set(count)

    def cache_result(self, hit: bool) -> None:
        self.cache.labels("hit" if hit else "miss").inc()

    def job_started(self, runner: str) -> None:
        self.job_starts.labels(runner).inc()

    def rate_limited(self, budget: str) -> None:
        self.rate_limited_total.labels(budget).inc()

    def rate_limit_fallback(self) -> None:
        self.rate_limit_fallbacks.inc()

    def job_done(self, outcome: str, seconds: float) -> None:
        self.job_seconds.labels(outcome).observe(seconds)

    def llm_endpoint_request(self, endpoint: str) -> None:
        self.llm_requests.labels(endpoint).inc()
        self.llm_outstanding.labels(endpoint).inc()

    def llm_endpoint_done(self, endpoint: str) -> None:
        self.llm_outstanding.labels(endpoint).dec()

    def llm_endpoint_error(self, endpoint: str, kind: str) -> None:
        self.llm_errors.labels(endpoint, kind).inc()

    def llm_endpoint_state(self, endpoint: str, *, ejected: bool) -> None:
        self.llm_ejected.labels(endpoint).set(1 if ejected else 0)

    def first_token(self, model: str, seconds: float) -> None:
        self.ttft_seconds.labels(model).observe(seconds)

    def index_loaded(self, entries: int, build_seconds: float | None, load_seconds: float) -> None:
        self.index_entries.set(entries)
        if build_seconds is not None:
            self.index_build_seconds.set(build_seconds)
        self.index_load_seconds.set(load_seconds)

    def reload_outcome(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "refused").inc()

    def sample_memory(self, role: str) -> None:
        rss = resident_bytes()
        if rss is not None:
            self.memory_bytes.labels(role).set(rss)
        # ru_maxrss is in KiB on Linux.
        self.max_memory_bytes.labels(role).set(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)

    def exposition(self) -> bytes:
        """The text format of every metric; merged over all processes in multiprocess mode."""
        self.flush()
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return generate_latest(merged)


def resident_bytes() -> int | None:
    """Current resident set size from /proc (Linux); None elsewhere."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


_metrics: Metrics | None = None


def get() -> Metrics:
    """This process's metrics, created on first use (after the supervisor set up the env)."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics


MEMORY_SAMPLE_S = 5.0
FLUSH_S = 1.0


async def sample_forever(role: str, period_s: float = MEMORY_SAMPLE_S,
                         flush_s: float = FLUSH_S) -> None:
    """Keep this process's memory gauge fresh and its hot-path counts flushed, so a merged
    scrape shows every process (the counts at most ``flush_s`` late)."""
    ticks = max(1, round(period_s / flush_s))
    for tick in itertools.count():
        if tick % ticks == 0:
            get().sample_memory(role)
        get().flush()
        await asyncio.sleep(flush_s)


def prepare_multiprocess_dir(path: Path) -> None:
    """Empty a multiprocess directory of stale samples (a previous run's counters)."""
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.db"):
        old.unlink(missing_ok=True)


def mark_dead(pid: int) -> None:
    """Drop a dead process's live gauges (its counters and histograms stay in the totals)."""
    directory = multiprocess_dir()
    if directory is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(directory))
