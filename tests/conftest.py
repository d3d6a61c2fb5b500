from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer, start_redis

# Nothing may reach a model hub from the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def redis_session() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    if server.can_restart:
        server.stop()


@pytest.fixture
def redis_server(redis_session: RedisServer) -> Iterator[RedisServer]:
    """A real Redis, wiped before each test; restarted if a previous test left it stopped."""
    redis_session.start()
    import redis as redis_sync

    client = redis_sync.Redis.from_url(redis_session.url)
    client.flushdb()
    client.close()
    yield redis_session
    redis_session.start()
