"""The activity tally across a fork (service/metrics/activity.py): a prefork worker's
children each count and flush their own, and never the parent's again."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable

import redis

from service.config import Settings
from service.metrics.activity import Tally


def _totals(client: redis.Redis) -> dict[bytes | str, int]:
    totals: dict[bytes | str, int] = {}
    for key in client.keys("cioq:act:*"):
        for name, value in client.hgetall(key).items():
            totals[name] = totals.get(name, 0) + int(value)
    return totals


def _child(tally: Tally, url: str) -> None:
    """Count, then wait for this process's own flusher to write it (else exit 1)."""
    client = redis.Redis.from_url(url)
    tally.add("default", "child", 5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not _totals(client).get(b"child"):
        time.sleep(0.05)
    raise SystemExit(0 if _totals(client).get(b"child") else 1)


def test_a_forked_child_counts_its_own_and_flushes_them_itself(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """A prefork worker's children fork after the parent counted: the child must neither
    send the parent's counts again nor rely on the parent's flusher thread."""
    settings = make_settings()
    tally = Tally()  # a background flusher, as in the api and workers
    tally.configure(settings.redis)
    tally.add("default", "parent", 2)  # starts the parent's flusher
    child = multiprocessing.get_context("fork").Process(
        target=_child, args=(tally, settings.redis.redis_url)
    )
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    totals = _totals(redis_client)
    assert totals.get(b"child") == 5
    assert totals.get(b"parent", 2) == 2  # flushed by the parent alone, never twice
