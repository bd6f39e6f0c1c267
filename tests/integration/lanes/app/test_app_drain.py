"""The drain on the App API lanes, in process, against real Redis and the sandbox over HTTP.

App jobs go out one request each, under the workspace lane's lease: a send whose request
was cut off is never sent again, a trigger with no rate slot hands the shard back without
an attempt, and a drain never packs another shard's jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import REGISTRY

from service import keys
from service.config import Settings
from service.delivery.crash_search import InflightNote
from service.jobs import Job
from service.lanes.app.jobs import BROADCAST_ROUTE, app_job
from service.store.shards import ShardStore
from tests.support.drain import build_drainer, dlq

EMAIL = {"transactional_message_id": 7, "to": "a@example.com", "identifiers": {"id": "p1"}}


@pytest.fixture
def settings(make_settings: Callable[..., Settings], app_sandbox_url: str) -> Settings:
    return make_settings(
        app_api_key="dev-app-key",
        app_url=app_sandbox_url,
        upstream_timeout_s=2,
        app_broadcast_interval_s=30,
    )


def send(n: int) -> Job:
    return app_job(f"s{n}", "/v1/send/email", EMAIL, limit="send", route="p1", op_type="email")


def trigger(n: int) -> Job:
    path = "/v1/campaigns/4/triggers"
    route = f"{BROADCAST_ROUTE}4"
    return app_job(
        f"t{n}",
        path,
        {"data": {"n": n}},
        limit="broadcast",
        route=route,
        bucket="4",
        op_type="trigger",
    )


def put(client: redis.Redis, shard: int, jobs: list[Job]) -> keys.ShardKeys:
    """`jobs` straight into one shard of their lane; that shard's keys."""
    shard_keys = keys.shard_keys("default", shard, jobs[0].lane)
    for job in jobs:
        client.xadd(shard_keys.stream, {job.field: job.payload})
    return shard_keys


def upstream_requests() -> float:
    """This process's ``cioq_upstream_requests_total`` for the default workspace."""
    return sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "cioq_upstream_requests"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("workspace") == "default"
    )


def received(app_sandbox: httpx.Client) -> list[Any]:
    return [r["op"] for r in app_sandbox.get("/_sandbox/received").json()["records"]]


def test_a_send_cut_off_mid_request_is_dead_lettered_never_resent(
    settings: Settings, redis_client: redis.Redis, app_sandbox: httpx.Client
) -> None:
    shard = put(redis_client, 0, [send(1), send(2)])
    store = ShardStore(redis_client)
    head = store.read(shard, after=None, count=1)[0]
    lease = store.acquire(shard, lease_ms=60_000)
    assert lease is not None
    lease.mark_inflight(InflightNote(head=head.id, count=1))  # then the worker died
    lease.release()

    report = build_drainer(settings, redis_client).drain("default", 0, shard.lane)

    assert (report.delivered, report.dead_lettered, report.requests) == (1, 1, 1)
    assert len(received(app_sandbox)) == 1  # only the second send went out
    (letter,) = dlq(redis_client)
    assert letter[b"cls"] == b"ambiguous" and b"died during the send" in letter[b"message"]
    assert redis_client.xlen(shard.stream) == 0


def test_a_trigger_without_a_rate_slot_hands_back_without_an_attempt(
    settings: Settings, redis_client: redis.Redis, app_sandbox: httpx.Client
) -> None:
    shard = put(redis_client, 0, [trigger(1), trigger(2)])
    counted = upstream_requests()

    report = build_drainer(settings, redis_client).drain("default", 0, shard.lane)

    assert report.stopped == "rate_limited"
    assert report.retrigger_s is not None and report.retrigger_s > 25
    assert report.delivered == 1 and len(received(app_sandbox)) == 1
    # What was not sent is no request: not to Customer.io's error ratio nor its latency.
    assert report.requests == 1 and upstream_requests() == counted + 1
    assert redis_client.xlen(shard.stream) == 1  # the second waits for its slot
    assert ShardStore(redis_client).retry_state(shard).attempts == 0


def test_an_app_drain_sends_only_its_own_shard(
    settings: Settings, redis_client: redis.Redis, app_sandbox: httpx.Client
) -> None:
    mine = put(redis_client, 0, [send(1)])
    other = put(redis_client, 1, [send(2)])

    report = build_drainer(settings, redis_client).drain("default", 0, mine.lane)

    assert (report.stopped, report.delivered, report.shards_held) == ("empty", 1, 1)
    assert redis_client.xlen(other.stream) == 1
    assert len(received(app_sandbox)) == 1
