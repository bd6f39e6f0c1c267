"""Helpers for tests that drive a Drainer against real Redis and the sandbox."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import redis

from service import keys
from service.config import Settings
from service.jobs import Lane, shard_for
from service.lanes.registry import clients as lane_clients
from service.lanes.track.jobs import v2_job
from service.store.connections import SyncStore
from service.store.dead_letters import DeadLetterStore
from service.store.shards import ShardStore
from tests.support.streams import Fields, stream_fields
from workers.drain import Drainer, DrainerSettings


class Clock:
    """Real time plus an offset the test moves forward; retries need no real waiting."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s


def build_drainer(
    settings: Settings, client: SyncStore, clock: Callable[[], float] = time.time
) -> Drainer:
    """A Drainer on real Redis with a fixed random source (backoff = its ceiling)."""
    clients = lane_clients(settings)
    return Drainer(
        DrainerSettings.of(settings),
        ShardStore(client),
        DeadLetterStore(client),
        clients,
        None,
        clock=clock,
        rng=lambda: 1.0,
    )


def person_op(i: int, **attrs: Any) -> dict[str, Any]:
    return {
        "type": "person",
        "action": "identify",
        "identifiers": {"id": f"p{i}"},
        "attributes": {"n": i, "pad": "x" * 150, **attrs},
    }


def enqueue(client: redis.Redis, ops: list[dict[str, Any]], shards: int = 1) -> None:
    for op in ops:
        job = v2_job(op)
        shard = shard_for("default", job.route, shards)
        client.xadd(keys.shard_keys("default", shard, Lane.TRACK).stream, {job.field: job.payload})


def dlq(client: redis.Redis) -> list[Fields]:
    """Every dead letter of workspace ``default``, oldest first."""
    return stream_fields(client, keys.dead_letters("default"))


def received_ns(sandbox: httpx.Client) -> list[int]:
    records = sandbox.get("/_sandbox/received").json()["records"]
    return [r["op"]["attributes"]["n"] for r in records]
