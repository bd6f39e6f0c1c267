"""F5 and F9 with real replicas and AOF: the drain's in-flight note and dead letters are
confirmed at the workspace's durability level (WAITAOF/WAIT on the writing connection).

The level comes from the start-up checks, as in the worker: `check_sync`'s verdict.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import redis
from pydantic import SecretStr

from service import keys
from service.config import Settings
from service.delivery.crash_search import InflightNote
from service.errors import StoreUnavailable
from service.jobs import Job
from service.lanes.app.jobs import app_job
from service.store.connections import connect_sync
from service.store.dead_letters import DeadLetter, DeadLetterStore
from service.store.shards import ShardStore
from service.store.startup_checks import check_sync
from tests.support.drain import build_drainer
from tests.support.processes import RedisServer
from tests.support.valkey import primary_with_replica, valkey_server

EMAIL = {"transactional_message_id": 7, "to": "a@example.com", "identifiers": {"id": "p1"}}


def _settings(
    server: RedisServer, level: Literal["fsync", "replica", "replicated"], app_url: str
) -> Settings:
    return Settings(
        redis_url=server.url,
        durability=level,
        durability_timeout_ms=300,
        shards=4,
        linger_ms=0,
        app_api_key=SecretStr("dev-app-key"),
        app_url=app_url,
        upstream_timeout_s=2,
    )


def _put_send(server: RedisServer) -> keys.ShardKeys:
    job: Job = app_job(
        "s1", "/v1/send/email", EMAIL, limit="send", route="send:s1", op_type="send_email"
    )
    shard = keys.shard_keys("default", 0, job.lane)
    server.client().xadd(shard.stream, {job.field: job.payload})
    return shard


def _received(app_sandbox: httpx.Client) -> list[Any]:
    records: list[Any] = app_sandbox.get("/_sandbox/received").json()["records"]
    return records


@pytest.fixture
def unfsynced(tmp_path: Path) -> Iterator[RedisServer]:
    """AOF on, ``appendfsync no``: WAITAOF cannot confirm a write in time."""
    server = RedisServer(tmp_path / "primary", appendonly=True, fsync="no", exe=valkey_server())
    yield server
    server.stop()


def test_a_send_whose_note_is_not_fsynced_does_not_go_out(
    unfsynced: RedisServer, app_sandbox_url: str, app_sandbox: httpx.Client
) -> None:
    """F5 at ``fsync``: the note must be on disk before the POST; it is not, so no POST,
    and the note is cleared (the send waits, queued, for a drain that can note it)."""
    settings = _settings(unfsynced, "fsync", app_sandbox_url)
    client = connect_sync(settings.redis)
    shard = _put_send(unfsynced)
    assert isinstance(client, redis.Redis)
    drainer = build_drainer(settings, client)
    drainer.store.confirmation = check_sync(client, settings.redis).confirmation
    with pytest.raises(StoreUnavailable):
        drainer.drain("default", 0, shard.lane)
    assert _received(app_sandbox) == []
    assert client.exists(shard.inflight) == 0
    assert client.xlen(shard.stream) == 1
    client.close()


@pytest.mark.parametrize("level", ["replica", "replicated"])
def test_the_note_and_a_letter_are_on_the_replica_when_their_writes_return(
    tmp_path: Path, level: Literal["replica", "replicated"], app_sandbox_url: str
) -> None:
    primary, replica = primary_with_replica(tmp_path, fsync="always")
    try:
        settings = _settings(primary, level, app_sandbox_url)
        client = connect_sync(settings.redis)
        confirmation = check_sync(client, settings.redis).confirmation
        assert confirmation is not None and confirmation.replicas == 1
        shard = _put_send(primary)
        store = ShardStore(client)
        store.confirmation = confirmation
        head = store.read(shard, after=None, count=1)[0]
        lease = store.acquire(shard, lease_ms=60_000)
        assert lease is not None
        lease.mark_inflight(InflightNote(head=head.id, count=1))
        # WAIT 1 returned: the replica holds the note (a failover keeps it).
        assert replica.client().hget(shard.inflight, "head") == head.id

        letters = DeadLetterStore(client)
        letters.confirmation = confirmation
        letter = DeadLetter(
            kind="app",
            payload=b"{}",
            source="s",
            reason="ambiguous",
            outcome_class="ambiguous",
            entry=f"{shard.tag}:{head.id.decode()}",
        )
        assert letters.add("default", [letter], [lease.fence]) == 1
        assert replica.client().xlen(keys.dead_letters("default")) == 1
        client.close()
    finally:
        replica.stop()
        primary.stop()
