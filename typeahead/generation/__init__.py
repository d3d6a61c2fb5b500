"""The generation tier: summaries as asynchronous jobs on Redis Streams, run by workers
or inline by the API process, streamed to clients; the LLM client, the GPU-free extractive
summariser, the prompt, the summary cache and the HTTP routes.

What other packages use is exported here; the rest is private to the package.
"""

from __future__ import annotations

from typeahead.generation.prompt import Doc
from typeahead.generation.queue import REDIS_DOWN, connect, open_redis

__all__ = ["REDIS_DOWN", "Doc", "connect", "open_redis"]
