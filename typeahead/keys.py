"""Every Redis key, prefix and TTL the generation tier uses, in one place.

The schema version is part of the prefix: a change to any value's layout bumps ``SCHEMA`` so
that old and new processes never read each other's records. Keys that hold a generated answer
also carry the model and prompt version (through the job id), so a new model or prompt never
serves a stale answer.
"""

from __future__ import annotations

SCHEMA = "v1"
PREFIX = f"typeahead:gen:{SCHEMA}:"

# The job queue: one Redis Stream shared by every worker through one consumer group.
QUEUE = PREFIX + "queue"
GROUP = "workers"

# A finished job's record and its token stream stay readable this long (late pollers, late
# stream joiners); the summary itself lives on in the cache for ``Settings.cache_ttl_s``.
JOB_TTL_S = 3600
# A queued or running job whose deadline passed this long ago is considered lost (its worker
# and every reclaimer died) and may be enqueued again.
STALE_GRACE_S = 5.0
# Jobs an API process runs itself (inline) are not in the queue: each holds a lease here, a
# sorted set of job id -> expiry (unix seconds) that its process renews. A worker puts a job
# whose lease expired (its API process died) on the queue, where it is retried as usual.
LEASES = PREFIX + "leases"

# A job reclaimed more often than this fails instead of crashing worker after worker.
MAX_ATTEMPTS = 3

# Semantic cache: at most this many query vectors are kept; older ones are trimmed first.
SEMANTIC_MAX_ENTRIES = 10_000


def job(job_id: str) -> str:
    """Hash with the job's status, query, deadline, attempt counter and result."""
    return f"{PREFIX}job:{job_id}"


def tokens(job_id: str) -> str:
    """Stream of the job's events (token, reset, done, error), read by every listener."""
    return f"{PREFIX}tokens:{job_id}"


def summary(job_id: str) -> str:
    """Cached result (summary and sources) of a finished job; JSON, TTL ``cache_ttl_s``."""
    return f"{PREFIX}summary:{job_id}"


def listeners(job_id: str) -> str:
    """Present while someone wants the job's answer: set by the POST that creates or joins the
    job (for ``generate_unwatched_grace_s``), refreshed by every API process streaming it.
    A worker cancels a running job whose key has expired (see ``LISTENER_FIELD``)."""
    return f"{PREFIX}listeners:{job_id}"


# The job-record field that says whether the job may be cancelled for want of listeners: "1"
# for users' jobs, "0" for pre-warm jobs (nobody listens to them by design). Records without
# it (written by an older API) are never cancelled this way.
LISTENER_FIELD = "needs_listener"
UNWATCHED_ERROR = "cancelled: nobody was listening"


def semantic_vectors(model_key: str) -> str:
    """Hash job id -> float32 query vector, for the semantic cache of one model and prompt."""
    return f"{PREFIX}semvec:{model_key}"


def semantic_order(model_key: str) -> str:
    """Sorted set job id -> insertion time, so the oldest vectors can be trimmed."""
    return f"{PREFIX}semord:{model_key}"


# An API process's wake-up stream lives this long after its last use (a dead process's expires).
HUB_WAKE_TTL_S = 3600


def hub_wake(process: str) -> str:
    """Stream that one API process's event-stream reader blocks on beside the token streams:
    an entry makes its pending read return so it restarts with a changed set of streams."""
    return f"{PREFIX}hubwake:{process}"


# --- curation rules (typeahead.http.curation)
# ------------------------------------------------------
# One hash tag for all three keys, so the transaction that changes a rule stays in one slot on
# a Redis Cluster.
CURATION_PREFIX = "typeahead:{curation}:v1:"
CURATION_RULES = CURATION_PREFIX + "rules"  # hash: rule id -> rule JSON
CURATION_VERSION = CURATION_PREFIX + "version"  # counter, raised by every change
CURATION_AUDIT = CURATION_PREFIX + "audit"  # stream: who changed what, when
CURATION_AUDIT_MAX = 10_000  # audit entries kept (approximately; oldest trimmed first)


# --- per-client rate limits (typeahead.http.ratelimit)
# ----------------------------------------------------
# A client's buckets share one hash tag, so the script that spends from both stays in one slot
# on a Redis Cluster; different clients spread over the slots.
RATE_SCHEMA = "v1"


def rate_bucket(client: str, budget: str) -> str:
    """Hash (tokens, when) of one client's token bucket for ``budget`` (requests or jobs);
    expires once it would have refilled."""
    return f"typeahead:{{rl:{client}}}:{RATE_SCHEMA}:{budget}"


# --- Redis Cluster: one hash tag per queue shard -----------------------------------------------
# On a cluster every multi-key command and Lua script must stay in one hash slot. A job's
# script touches its record, token stream, listeners key, cached summary, its queue and its
# leases, so all of them carry the tag of the job's queue shard: ``{q<shard>.<n>}``, with
# ``n`` the first suffix that puts the tag in the shard's share of the 16384 slots (so that
# shards spread evenly over primaries that own equal slot ranges, as `redis-cli --cluster
# create` assigns them). A job's shard is its id (hex) modulo the shard count: every process
# must use the same count (``TYPEAHEAD_REDIS_QUEUE_SHARDS``).
CLUSTER_SLOTS = 16384
SEMANTIC_TAG = "{semantic}"  # both semantic-cache keys, for their MULTI/EXEC


def shard_tag(shard: int, shards: int) -> str:
    """The hash tag of one queue shard: stable across processes, versions and restarts."""
    low, high = shard * CLUSTER_SLOTS // shards, (shard + 1) * CLUSTER_SLOTS // shards
    n = 0
    while not low <= key_slot(f"q{shard}.{n}") < high:
        n += 1
    return f"{{q{shard}.{n}}}"


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        table.append(crc)
    return tuple(table)


_CRC16 = _crc_table()


def key_slot(tag: str) -> int:
    """Redis Cluster's slot of a hash tag's content: CRC16 (XMODEM) modulo 16384."""
    crc = 0
    for byte in tag.encode():
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc % CLUSTER_SLOTS


class Layout:
    """Where a deployment's generation keys live.

    The default (one Redis, or a Sentinel-managed primary) uses the plain names above, one
    queue and one leases set. ``Layout.cluster(shards)`` prefixes every job key with its
    shard's hash tag, and has one queue stream (with its consumer group) and one leases set
    per shard; the key names differ from the plain ones, so moving a deployment from one
    Redis to a cluster starts with an empty store (see docs/operations.md).
    """

    __slots__ = ("_bases", "shards", "tagged")

    def __init__(self, shards: int = 1, *, tagged: bool = False) -> None:
        if shards < 1 or (shards > 1 and not tagged):
            raise ValueError("several queue shards need the tagged (cluster) layout")
        self.shards = shards
        self.tagged = tagged
        self._bases = [f"{PREFIX}{shard_tag(s, shards)}:" for s in range(shards)] \
            if tagged else [PREFIX]

    @classmethod
    def cluster(cls, shards: int) -> Layout:
        return cls(shards, tagged=True)

    def shard(self, job_id: str) -> int:
        """The job's queue shard (0 on the plain layout)."""
        if self.shards == 1:
            return 0
        try:
            return int(job_id[:8], 16) % self.shards
        except ValueError:  # not a job id of ours: any fixed shard will do
            return key_slot(job_id) % self.shards

    def slot(self, shard: int) -> int:
        """The hash slot every key of a tagged layout's ``shard`` lives in."""
        return key_slot(shard_tag(shard, self.shards)[1:-1])

    def _base(self, job_id: str) -> str:
        return self._bases[self.shard(job_id)]

    def job(self, job_id: str) -> str:
        return job(job_id) if not self.tagged else f"{self._base(job_id)}job:{job_id}"

    def tokens(self, job_id: str) -> str:
        return tokens(job_id) if not self.tagged else f"{self._base(job_id)}tokens:{job_id}"

    def summary(self, job_id: str) -> str:
        return summary(job_id) if not self.tagged else f"{self._base(job_id)}summary:{job_id}"

    def listeners(self, job_id: str) -> str:
        if not self.tagged:
            return listeners(job_id)
        return f"{self._base(job_id)}listeners:{job_id}"

    def queue(self, shard: int) -> str:
        return QUEUE if not self.tagged else self._bases[shard] + "queue"

    def leases(self, shard: int) -> str:
        return LEASES if not self.tagged else self._bases[shard] + "leases"

    def hub_wake(self, process: str, shard: int = 0) -> str:
        """A process's wake-up stream for its reader of one shard's token streams."""
        return hub_wake(process) if not self.tagged else f"{self._bases[shard]}hubwake:{process}"

    def semantic_vectors(self, model_key: str) -> str:
        base = semantic_vectors(model_key)
        return base if not self.tagged else f"{PREFIX}{SEMANTIC_TAG}:semvec:{model_key}"

    def semantic_order(self, model_key: str) -> str:
        base = semantic_order(model_key)
        return base if not self.tagged else f"{PREFIX}{SEMANTIC_TAG}:semord:{model_key}"


PLAIN = Layout()
