"""F5 and F9: the in-flight note and dead letters are confirmed at the durability level.

The shared test Redis has no replica, so ``WAIT 1`` (the ``replica`` and ``replicated``
levels) can never be confirmed there: that is the failure path, on real Redis. The
confirmed path, with a real replica, is tests/e2e/store/test_confirmed_drain_writes.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from service import keys
from service.config import Settings
from service.delivery.crash_search import InflightNote
from service.errors import StoreUnavailable
from service.jobs import Job
from service.lanes.app.jobs import app_job
from service.store.dead_letters import DeadLetter, DeadLetterStore
from service.store.durability import Confirmation
from service.store.shards import ShardStore
from tests.support.drain import build_drainer, dlq

EMAIL = {"transactional_message_id": 7, "to": "a@example.com", "identifiers": {"id": "p1"}}
#: One replica must have the write: never true of the shared, replica-less test Redis.
UNREACHABLE = Confirmation(waitaof=False, replicas=1, timeout_ms=50)


@pytest.fixture
def settings(make_settings: Callable[..., Settings], app_sandbox_url: str) -> Settings:
    return make_settings(app_api_key="dev-app-key", app_url=app_sandbox_url, upstream_timeout_s=2)


def _put_send(client: redis.Redis) -> keys.ShardKeys:
    job: Job = app_job(
        "s1", "/v1/send/email", EMAIL, limit="send", route="send:s1", op_type="send_email"
    )
    shard = keys.shard_keys("default", 0, job.lane)
    client.xadd(shard.stream, {job.field: job.payload})
    return shard


def _received(app_sandbox: httpx.Client) -> list[Any]:
    records: list[Any] = app_sandbox.get("/_sandbox/received").json()["records"]
    return records


def test_a_note_the_level_cannot_confirm_stops_the_send_and_is_cleared(
    settings: Settings, redis_client: redis.Redis, app_sandbox: httpx.Client
) -> None:
    """F5: no POST on an unconfirmed note; the note is cleared (nothing was sent), so the
    next drain sends the job once instead of dead-lettering it as ambiguous."""
    shard = _put_send(redis_client)
    drainer = build_drainer(settings, redis_client)
    drainer.store.confirmation = UNREACHABLE
    with pytest.raises(StoreUnavailable):
        drainer.drain("default", 0, shard.lane)
    assert _received(app_sandbox) == []
    assert redis_client.exists(shard.inflight) == 0
    assert redis_client.xlen(shard.stream) == 1

    report = build_drainer(settings, redis_client).drain("default", 0, shard.lane)
    assert report.requests == 1
    assert len(_received(app_sandbox)) == 1
    assert dlq(redis_client) == []


def test_a_note_is_written_and_confirmed_when_the_level_asks_nothing(
    redis_client: redis.Redis,
) -> None:
    """The `write` level: the note's script runs alone, as before."""
    shard = _put_send(redis_client)
    store = ShardStore(redis_client)
    store.confirmation = Confirmation(waitaof=False, replicas=0, timeout_ms=50)
    head = store.read(shard, after=None, count=1)[0]
    lease = store.acquire(shard, lease_ms=60_000)
    assert lease is not None
    lease.mark_inflight(InflightNote(head=head.id, count=1))
    assert redis_client.hget(shard.inflight, "head") == head.id


def test_a_dead_letter_the_level_cannot_confirm_is_an_error_before_any_trim(
    redis_client: redis.Redis,
) -> None:
    """F9: the caller resolves the entry only after `add` returns, so an unconfirmed
    letter leaves the job queued (its second add is a no-op: one letter per entry)."""
    letters = DeadLetterStore(redis_client)
    letters.confirmation = UNREACHABLE
    letter = DeadLetter(
        kind="app",
        payload=b"{}",
        source="s",
        reason="ambiguous",
        outcome_class="ambiguous",
        entry="app:0:1-0",
    )
    with pytest.raises(StoreUnavailable):
        letters.add("default", [letter])
    letters.confirmation = None
    assert letters.add("default", [letter]) == 0  # the first write landed: not added twice
    assert len(dlq(redis_client)) == 1
