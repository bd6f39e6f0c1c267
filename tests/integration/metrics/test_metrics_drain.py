"""What a drain records: deliveries, batches, upstream classes, retries, bisection, DLQ."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import REGISTRY

from service import keys
from service.config import Settings
from service.jobs import PRODUCER_FIELD, Lane
from service.lanes.registry import clients as lane_clients
from service.lanes.track.jobs import v2_job
from service.store.dead_letters import DeadLetterStore
from service.store.shards import ShardStore
from workers.drain import Drainer, DrainerSettings

WS = {"workspace": "default"}
WSL = {**WS, "lane": "track"}  # metrics that carry a lane
#: Entries `enqueue` writes name this producer, as ingest's do (`lua/enqueue.lua`).
PRODUCER = {"producer": "billing"}


@pytest.fixture
def drainer(
    make_settings: Callable[..., Settings], sandbox_url: str, redis_client: redis.Redis
) -> Drainer:
    settings = make_settings(shards=1, track_url=sandbox_url, retry_base_ms=1000)
    clients = lane_clients(settings)
    return Drainer(
        DrainerSettings.of(settings),
        ShardStore(redis_client),
        DeadLetterStore(redis_client),
        clients,
        None,
        rng=random.Random(7).random,
    )


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def enqueue(client: redis.Redis, ops: list[dict[str, Any]]) -> None:
    for op in ops:
        job = v2_job(op)
        stream = keys.shard_keys("default", 0, Lane.TRACK).stream
        client.xadd(stream, {job.field: job.payload, PRODUCER_FIELD: b"billing"})


def event(n: int, **attrs: Any) -> dict[str, Any]:
    return {
        "type": "person",
        "action": "event",
        "identifiers": {"id": "one-person"},
        "name": f"e{n}",
        "attributes": {"n": n, **attrs},
    }


def test_a_delivered_batch_is_counted_once_with_its_size_and_latency(
    drainer: Drainer, redis_client: redis.Redis, sandbox: httpx.Client
) -> None:
    before = {
        "ops": value("cioq_delivered_ops_total", **WSL, **PRODUCER),
        "ok": value("cioq_upstream_requests_total", kind="v2", status_class="2xx", **WSL),
        "batches": value("cioq_batch_ops_count", **WSL),
        "batch_ops": value("cioq_batch_ops_sum", **WSL),
        "bytes": value("cioq_batch_bytes_sum", **WSL),
        "latency": value("cioq_delivery_latency_seconds_count", **WS),
    }
    enqueue(redis_client, [event(n) for n in range(5)])
    assert drainer.drain("default", 0, Lane.TRACK).stopped == "empty"
    body_bytes = sandbox.get("/_sandbox/requests").json()["records"][0]["body_bytes"]
    assert value("cioq_delivered_ops_total", **WSL, **PRODUCER) - before["ops"] == 5
    ok = value("cioq_upstream_requests_total", kind="v2", status_class="2xx", **WSL)
    assert ok - before["ok"] == 1
    assert value("cioq_batch_ops_count", **WSL) - before["batches"] == 1
    assert value("cioq_batch_ops_sum", **WSL) - before["batch_ops"] == 5
    assert value("cioq_batch_bytes_sum", **WSL) - before["bytes"] == body_bytes
    assert value("cioq_delivery_latency_seconds_count", **WS) - before["latency"] == 5
    counts = redis_client.hgetall(keys.drain_rate("default"))
    assert sum(int(c) for c in counts.values()) == 5


def test_a_transient_failure_schedules_a_counted_retry(
    drainer: Drainer, redis_client: redis.Redis, sandbox: httpx.Client
) -> None:
    retries = value("cioq_retries_scheduled_total", status_class="5xx", **WS)
    failed = value("cioq_upstream_requests_total", kind="v2", status_class="5xx", **WSL)
    sandbox.post("/_sandbox/faults", json={"status_sequence": [503]}).raise_for_status()
    enqueue(redis_client, [event(1)])
    assert drainer.drain("default", 0, Lane.TRACK).stopped == "backoff"
    assert value("cioq_retries_scheduled_total", status_class="5xx", **WS) - retries == 1
    after = value("cioq_upstream_requests_total", kind="v2", status_class="5xx", **WSL)
    assert after - failed == 1


def test_a_rejected_batch_counts_bisection_and_its_dead_letter(
    drainer: Drainer, redis_client: redis.Redis, sandbox: httpx.Client
) -> None:
    bisect = value("cioq_bisect_requests_total", **WS)
    dead = value("cioq_dead_letters_total", reason="invalid", **WS, **PRODUCER)
    delivered = value("cioq_delivered_ops_total", **WSL, **PRODUCER)
    enqueue(redis_client, [event(n, sandbox_poison="400" if n == 2 else "no") for n in range(4)])
    report = drainer.drain("default", 0, Lane.TRACK)
    assert report.stopped == "empty"
    assert value("cioq_bisect_requests_total", **WS) - bisect == report.bisect_requests >= 2
    assert value("cioq_dead_letters_total", reason="invalid", **WS, **PRODUCER) - dead == 1
    assert value("cioq_delivered_ops_total", **WSL, **PRODUCER) - delivered == 3


def test_refused_credentials_count_a_setup_pause(
    drainer: Drainer, redis_client: redis.Redis, sandbox: httpx.Client
) -> None:
    pauses = value("cioq_pauses_total", cause="setup", **WSL)
    sandbox.post("/_sandbox/faults", json={"status_sequence": [401]}).raise_for_status()
    enqueue(redis_client, [event(1)])
    assert drainer.drain("default", 0, Lane.TRACK).stopped == "setup"
    assert value("cioq_pauses_total", cause="setup", **WSL) - pauses == 1
