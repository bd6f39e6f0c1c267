"""Shared fixtures: a real Redis (a dedicated db per xdist worker), settings, clean env."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from service.config import Settings

REDIS_HOST = os.environ.get("CIOQ_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("CIOQ_TEST_REDIS_PORT", "6379"))


def _db_for_worker() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return 2 + int(worker.removeprefix("gw") or 0)


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's CIOQ_* settings."""
    for name in list(os.environ):
        if name.startswith("CIOQ_") or name == "PORT":
            monkeypatch.delenv(name)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A flushed Redis database of this worker's own; fails in CI when Redis is missing."""
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{_db_for_worker()}"
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no Redis at {REDIS_HOST}:{REDIS_PORT}: {exc}")
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def make_settings(redis_url: str) -> Callable[..., Settings]:
    """Build Settings for a test: real Redis, small shard count, no linger unless asked."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"redis_url": redis_url, "shards": 4, "linger_ms": 0}
        values.update(overrides)
        return Settings(**values)

    return build
