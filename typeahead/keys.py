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
