"""The one typed settings object.

Built once at start-up from ``TYPEAHEAD_*`` environment variables (plus ``REDIS_URL``), then
overridden by command-line flags, and passed explicitly to whatever needs it. A bad value fails
loudly with the variable's name; nothing here runs at import time.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from typeahead.errors import ConfigError
from typeahead.numbers import parse_float, parse_int

ENV_PREFIX = "TYPEAHEAD_"
# Variables that keep their conventional names instead of the prefix.
ENV_ALIASES = {"redis_url": "REDIS_URL", "redis_sentinels": "REDIS_SENTINELS"}


@dataclass(frozen=True, slots=True)
class Settings:
    # --- millisecond tier ------------------------------------------------------------------
    index_dir: Path = Path("indexes/aol")
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    # Connections waiting to be accepted (the kernel caps it at net.core.somaxconn). A search
    # box opens connections in bursts; an overflowing queue drops handshakes, which the client
    # retries only after 0.2-1 s.
    listen_backlog: int = 4096
    default_k: int = 10
    max_k: int = 50
    max_query_chars: int = 200
    verify_index: bool = True  # checksum every data file when an index is loaded
    semantic: bool = True  # semantic neighbours in /v1/suggest when the index has vectors
    results_k: int = 3  # instant results (documents) per suggest call
    results_per_article: int = 1  # instant results from one article (title); 0: any number
    # With one result per article, a question's free result slots show more paragraphs of the
    # articles already shown (repeated titles; off by default).
    results_fill: bool = False
    # The learned order over lexical and generated candidates (typeahead train-ranker) where
    # generated completions are asked for; false: the fixed tier order.
    # Off by default: +1% MRR for about +1 ms p99 over HTTP at 1,000 req/s (docs/completion.md).
    completion_ranker: bool = False
    completion_ranker_file: Path | None = None  # None: the packaged model
    # The character language model (typeahead train-lm --out) that completes in place of the
    # n-gram generator, over the same safe pieces; None: the n-gram generator. It costs
    # milliseconds a keystroke where the n-gram generator costs microseconds
    # (docs/completion.md), and the completion ranker is not used with it.
    completion_lm_file: Path | None = None
    suggest_cache_size: int = 50_000  # per-process LRU of whole answers; 0 disables
    # Answer plain keystroke requests beneath aiohttp's framework (typeahead.http.fastpath);
    # false: every request goes through aiohttp (the same answers, at about twice the CPU).
    suggest_fast_path: bool = True
    # A connection that starts a request head must finish it within head_timeout_s (a client
    # trickling bytes cannot hold a connection), and a request body must arrive within the same
    # time after its head (408); one idle between requests for keepalive_timeout_s is closed;
    # both paths (the fast path and aiohttp) apply them.
    head_timeout_s: float = 10.0
    keepalive_timeout_s: float = 75.0
    student_dir: Path | None = None  # None: the packaged default student
    intent_model_dir: Path | None = None  # None: the packaged default model
    intent_threshold: float | None = None  # None: the threshold stored with the model
    # Suggestion safety: adult categories this deployment allows (sexual, profanity; never
    # minors, bestiality, sexual violence, slurs or personal data). Must match build-index's
    # --allow-category, or the index is filtered again at load.
    safety_allow: tuple[str, ...] = ()
    curation_poll_s: float = 0.25  # how often each API process checks Redis for rule changes
    curation_file: Path | None = None  # None: curation.json beside the index directory
    # --- generation tier -------------------------------------------------------------------
    generation: bool = True  # false: a suggest-only API (no /v1/generate routes)
    redis_url: str | None = None
    # Redis Cluster (REDIS_URL names any node): each job's keys carry its queue shard's hash
    # tag, and the queue is this many streams, each with its consumer group (keys.Layout).
    # Every process of a deployment must use the same shard count.
    redis_cluster: bool = False
    redis_queue_shards: int = 16
    # Sentinel (comma-separated host:port): the primary of this service, found and followed
    # through failovers; REDIS_URL, if set, then gives only the password and database.
    redis_sentinels: tuple[str, ...] = ()
    redis_sentinel_service: str = "typeahead"
    llm_url: str | None = None
    llm_model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    llm_api_key: str | None = None
    llm_connect_timeout_s: float = 2.0
    llm_read_timeout_s: float = 30.0
    llm_max_concurrency: int = 16
    llm_retries: int = 2
    llm_max_tokens: int = 256
    # Several replicas in llm_url (comma-separated; typeahead.generation.endpoints): an
    # endpoint is ejected after llm_eject_after consecutive failures (requests or probes) and
    # re-admitted by a successful GET <base><llm_health_path>, probed every llm_probe_interval_s;
    # a prompt prefix keeps to its replica unless that one has more than llm_affinity_slack
    # requests open beyond the least busy one.
    llm_eject_after: int = 3
    llm_probe_interval_s: float = 2.0
    llm_health_path: str = "/health"
    llm_affinity_slack: int = 4
    job_deadline_s: float = 60.0
    job_claim_idle_s: float = 30.0  # a job pending this long on a dead worker is reclaimed
    queue_max_depth: int = 1000
    cache_ttl_s: int = 7 * 24 * 3600
    semantic_cache: bool = False
    semantic_cache_threshold: float = 0.95
    # Cached summaries this process served lately, kept in its memory for this long (0: off):
    # a popular question asked again skips the Redis round trip
    # (typeahead.generation.cache.HotSummaries).
    generate_memory_cache_s: float = 10.0
    generate_memory_cache_size: int = 4096
    # A running job nobody streams or polls is cancelled (upstream request closed) once its
    # listeners key has been absent this long; pre-warm jobs are exempt.
    generate_cancel_unwatched: bool = True
    generate_unwatched_grace_s: float = 10.0
    # A Redis call on a request path (generate, poll) unanswered this long while Redis
    # answered nothing else counts as Redis down: the circuit breaker then answers 503 at
    # once for 0.5 s (typeahead.generation.queue.RedisGuard).
    redis_timeout_s: float = 0.09
    # Open event streams wait out a Redis outage or stall this long (resuming where they
    # were) before they end with an error.
    generate_stream_outage_s: float = 10.0
    # Jobs an API process runs itself, at once, when the LLM is an HTTP server (vLLM): the job
    # it just created goes straight to the LLM and its tokens straight to its own streams,
    # without the queue's hops through Redis and a worker. Beyond this many, and with the
    # CPU-bound extractive summariser always, jobs go through the queue. 0: never inline.
    generate_inline_jobs: int = 8
    # --- operations and abuse limits -------------------------------------------------------
    admin_token: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 16 * 1024
    # Per-client budgets on POST /v1/generate, shared by every API process through Redis
    # (each process's own while Redis is down): new generation jobs (LLM calls), and every
    # request, cached answers included. 0 disables either (typeahead.http.ratelimit).
    generate_rate_per_min: int = 30
    generate_request_rate_per_min: int = 600
    api_key_header: str = "X-API-Key"
    # Keys that name a client for the generate rate limit (comma-separated in
    # TYPEAHEAD_API_KEYS). With none, the header is ignored and the client is its address;
    # with some, an unknown key is refused (401), so a fresh key per request buys nothing.
    api_keys: tuple[str, ...] = ()
    log_level: str = "INFO"
    log_queries: bool = False  # query text in logs only at DEBUG, and only when enabled
    suggest_log_sample: float = 0.01  # share of successful /v1/suggest calls given a log line
    metrics: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read the environment, then apply non-None ``overrides`` (command-line flags)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        hints = get_type_hints(cls)
        for f in fields(cls):
            if f.name == "extra":
                continue
            var = ENV_ALIASES.get(f.name, ENV_PREFIX + f.name.upper())
            if var in env and env[var] != "":
                values[f.name] = _parse(var, env[var], hints[f.name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    @property
    def uses_redis(self) -> bool:
        """Whether an external Redis (a URL or Sentinel) is configured."""
        return bool(self.redis_url or self.redis_sentinels)

    def replace(self, **changes: Any) -> Settings:
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        _require(1 <= self.port <= 65535 or self.port == 0, "port must be 0..65535")
        _require(1 <= self.workers <= 64, "workers must be 1..64")
        _require(1 <= self.listen_backlog <= 65535, "listen_backlog must be 1..65535")
        _require(0.0 < self.head_timeout_s <= 3600.0, "head_timeout_s must be in (0, 3600]")
        _require(0.0 < self.keepalive_timeout_s <= 86400.0,
                 "keepalive_timeout_s must be in (0, 86400]")
        _require(1 <= self.default_k <= self.max_k, "default_k must be 1..max_k")
        _require(1 <= self.max_query_chars <= 10_000, "max_query_chars must be 1..10000")
        _require(0 <= self.results_per_article <= 50, "results_per_article must be 0..50")
        _validate_redis(self)
        _require(self.queue_max_depth >= 1, "queue_max_depth must be >= 1")
        _require(self.job_deadline_s > 0, "job_deadline_s must be > 0")
        _require(0 <= self.generate_inline_jobs <= 1024, "generate_inline_jobs must be 0..1024")
        _require(self.generate_unwatched_grace_s > 0, "generate_unwatched_grace_s must be > 0")
        _require(0.001 <= self.redis_timeout_s <= 60.0, "redis_timeout_s must be 0.001..60")
        _require(0.0 <= self.generate_stream_outage_s <= 300.0,
                 "generate_stream_outage_s must be 0..300")
        _require(0.0 <= self.suggest_log_sample <= 1.0, "suggest_log_sample must be in [0, 1]")
        _require(0.0 < self.semantic_cache_threshold <= 1.0, "semantic_cache_threshold in (0, 1]")
        _require(0.0 <= self.generate_memory_cache_s <= 3600.0,
                 "generate_memory_cache_s must be 0..3600")
        _require(self.generate_memory_cache_size >= 0, "generate_memory_cache_size must be >= 0")
        _validate_llm(self)
        _require(0 <= self.generate_rate_per_min <= 1_000_000,
                 "generate_rate_per_min must be 0..1000000")
        _require(0 <= self.generate_request_rate_per_min <= 1_000_000,
                 "generate_request_rate_per_min must be 0..1000000")
        bad = sorted(set(self.safety_allow) - {"sexual", "profanity"})
        _require(not bad, f"safety_allow may name sexual and profanity only, not {bad}")
        _require(0.01 <= self.curation_poll_s <= 60.0, "curation_poll_s must be 0.01..60")
        if self.intent_threshold is not None:
            _require(0.0 <= self.intent_threshold <= 1.0, "intent_threshold must be in [0, 1]")
        _require(self.log_level.upper() in _LEVELS, f"log_level must be one of {sorted(_LEVELS)}")


_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR"}


def _validate_redis(s: Settings) -> None:
    _require(1 <= s.redis_queue_shards <= 256, "redis_queue_shards must be 1..256")
    _require(not (s.redis_cluster and s.redis_sentinels),
             "redis_cluster and redis_sentinels exclude each other")
    _require(not s.redis_cluster or bool(s.redis_url),
             "redis_cluster needs REDIS_URL (any node of the cluster)")
    if s.redis_cluster and s.redis_url:
        nodes = [part.strip() for part in s.redis_url.split(",")]
        bad = [n for n in nodes if not n.startswith(("redis://", "rediss://"))]
        _require(not bad, f"REDIS_URL on a cluster is redis://host:port[,redis://…], not {bad}")
    _require(bool(s.redis_sentinel_service.strip()), "redis_sentinel_service must not be empty")
    for address in s.redis_sentinels:
        host, _, port = address.rpartition(":")
        _require(bool(host) and port.isdigit() and 1 <= int(port) <= 65535,
                 f"redis_sentinels: {address!r} is not host:port")


def _validate_llm(s: Settings) -> None:
    for url in (s.llm_url or "").split(","):
        url = url.strip()
        _require(url.startswith(("http://", "https://")) or not url,
                 f"llm_url: {url[:80]!r} is not an http:// or https:// URL")
    _require(not (s.llm_url or "").strip() or any(u.strip() for u in (s.llm_url or "").split(",")),
             "llm_url names no URL")
    _require(1 <= s.llm_eject_after <= 1000, "llm_eject_after must be 1..1000")
    _require(0.05 <= s.llm_probe_interval_s <= 3600.0, "llm_probe_interval_s must be 0.05..3600")
    _require(s.llm_health_path.startswith("/"), "llm_health_path must start with /")
    _require(0 <= s.llm_affinity_slack <= 100_000, "llm_affinity_slack must be 0..100000")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(f"invalid setting: {message}")


def _parse(var: str, raw: str, hint: Any) -> Any:
    """Convert one environment string to the field's type, naming the variable on failure."""
    text = str(hint)
    try:
        if hint is bool or text == "bool":
            return _parse_bool(raw)
        if hint is int or text == "int":
            return parse_int(raw.strip(), negative=True)
        if hint is float or "float" in text:
            return parse_float(raw.strip(), negative=True)
        if "Path" in text:
            return Path(raw)
        if "tuple" in text:
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        return raw
    except ValueError as exc:
        raise ConfigError(f"{var}={raw!r} is not a valid value: {exc}") from exc


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true/false")
