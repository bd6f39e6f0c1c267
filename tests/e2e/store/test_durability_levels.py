"""`fsync` and `replicated` are confirmed on the connection that wrote, proved on Valkey.

``WAITAOF`` and ``WAIT`` cover only the writes of their own connection; on a connection
that wrote nothing they succeed at once. Each test sets up a server where the write
*cannot* be confirmed (no fsync ever happens, or the only replica is frozen) and then
sends concurrent enqueues: every one must be refused. Confirming on whatever pooled
connection comes next (the old code path) lets some through as "durable".

Debian's redis-server 7.0 has no WAITAOF; `tests.support.valkey` fetches a Valkey 9 binary.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
import redis

from service.api.app import create_app
from service.config import Settings
from service.errors import StoreUnavailable
from service.jobs import Job, dumps
from tests.support.processes import RedisServer
from tests.support.triggers import RecordingTriggers
from tests.support.valkey import primary_with_replica, valkey_server

CONCURRENT = 24
TIMEOUT_MS = 300


@pytest.fixture(scope="module")
def valkey() -> str:
    return valkey_server()


@pytest.fixture
def unfsynced(tmp_path: Path, valkey: str) -> Iterator[RedisServer]:
    """A Valkey with AOF on and ``appendfsync no``: it never fsyncs a write itself."""
    server = RedisServer(tmp_path / "primary", appendonly=True, fsync="no", exe=valkey)
    yield server
    server.stop()


@pytest.fixture
def frozen_replica(tmp_path: Path) -> Iterator[RedisServer]:
    """A Valkey primary whose one replica is connected but stopped (SIGSTOP)."""
    primary, replica = primary_with_replica(tmp_path, fsync="always")
    assert replica.proc is not None
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        yield primary
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
        replica.stop()
        primary.stop()


def _job(person: int) -> Job:
    op = {"type": "person", "action": "identify", "identifiers": {"id": f"p{person}"}}
    return Job("v2", f"p{person}", dumps(op), "identify")


async def _enqueue_concurrently(settings: Settings) -> tuple[int, int]:
    """(acknowledged, refused) of CONCURRENT single-job enqueues sent at once."""
    app = create_app(settings, triggers=RecordingTriggers())
    try:
        await app.gate.startup()
        assert app.gate.verdict is not None and app.gate.verdict.confirmation is not None
        outcomes = await asyncio.gather(
            *(app.queue.enqueue("default", [_job(n)]) for n in range(CONCURRENT)),
            return_exceptions=True,
        )
    finally:
        await app.aclose()
    # A write applied but not confirmed in time is refused too (StoredUnconfirmed, a
    # StoreUnavailable): the producer gets a 503 and its retry stores nothing twice.
    refused = sum(isinstance(o, StoreUnavailable) for o in outcomes)
    unexpected = [
        o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, StoreUnavailable)
    ]
    assert not unexpected, unexpected
    return CONCURRENT - refused, refused


def _settings(server: RedisServer, level: Literal["write", "fsync", "replicated"]) -> Settings:
    return Settings(
        redis_url=server.url,
        durability=level,
        durability_timeout_ms=TIMEOUT_MS,
        shards=8,
    )


def test_waitaof_covers_only_its_own_connection(unfsynced: RedisServer) -> None:
    """The server fact the fix rests on: another connection's WAITAOF vouches for nothing."""
    writer, other = unfsynced.client(), unfsynced.client()
    writer.set("k", "v")
    assert other.execute_command("WAITAOF", 1, 0, TIMEOUT_MS) == [1, 0]
    assert writer.execute_command("WAITAOF", 1, 0, TIMEOUT_MS) == [0, 0]


def test_wait_covers_only_its_own_connection(frozen_replica: RedisServer) -> None:
    writer, other = frozen_replica.client(), frozen_replica.client()
    writer.set("k", "v")
    assert other.execute_command("WAIT", 1, TIMEOUT_MS) == 1
    assert writer.execute_command("WAIT", 1, TIMEOUT_MS) == 0


def test_fsync_acknowledges_nothing_that_was_not_fsynced(unfsynced: RedisServer) -> None:
    acknowledged, refused = asyncio.run(_enqueue_concurrently(_settings(unfsynced, "fsync")))
    assert (acknowledged, refused) == (0, CONCURRENT)


def test_replicated_acknowledges_nothing_no_replica_received(
    frozen_replica: RedisServer,
) -> None:
    acknowledged, refused = asyncio.run(
        _enqueue_concurrently(_settings(frozen_replica, "replicated"))
    )
    assert (acknowledged, refused) == (0, CONCURRENT)


@pytest.mark.parametrize("level", ["fsync", "replicated"])
def test_levels_acknowledge_when_the_server_confirms(
    tmp_path: Path, level: Literal["fsync", "replicated"]
) -> None:
    """With fsync and a live replica, the same concurrent enqueues are all acknowledged."""
    primary, replica = primary_with_replica(tmp_path)
    try:
        base = _settings(primary, level)
        redis_conf = base.redis.model_copy(update={"durability_timeout_ms": 5000})
        settings = base.model_copy(update={"redis": redis_conf})
        acknowledged, _ = asyncio.run(_enqueue_concurrently(settings))
        assert acknowledged == CONCURRENT
        client = primary.client()
        assert sum(client.xlen(k) for k in client.scan_iter("cioq:q:*")) == CONCURRENT
        client.close()
    finally:
        replica.stop()
        primary.stop()


def test_old_servers_are_not_asked_for_waitaof(tmp_path: Path) -> None:
    """Redis 7.0 with ``appendfsync always`` is confirmed by its reply; it has no WAITAOF."""
    server = RedisServer(tmp_path / "r", appendonly=True, fsync="always")
    try:
        with pytest.raises(redis.ResponseError):
            server.client().execute_command("WAITAOF", 1, 0, 10)
        acknowledged, _ = asyncio.run(_enqueue_concurrently(_settings(server, "fsync")))
        assert acknowledged == CONCURRENT
    finally:
        server.stop()
