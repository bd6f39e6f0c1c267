"""Tying late failures to what cioq sent, on real Redis and the sandbox: the drain indexes
what Customer.io accepted, the poller links each failure it finds to that job (its id,
producer, accept time, payload), records what it cannot link as unlinked, and counts both;
a person's entries can be removed; a linked record's corrected call is re-sent once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis

from sandbox import SandboxConfig, create_sandbox_app
from service import keys
from service.config import Settings
from service.errors import InvalidRequest
from service.jobs import PRODUCER_FIELD, Lane
from service.lanes.track.jobs import v2_job
from service.store.connections import connect_async
from service.store.late_failures import LateFailures, LateFilter
from service.store.late_forget import remove_person_failures
from service.store.queue import Queue
from service.store.sent_index import find_sent, record_sent, remove_person
from service.store.shards import Entry
from tests.support.http_server import serve_in_thread
from tests.support.late import (
    APP_KEY,
    Poller,
    drain,
    enqueue,
    event,
    identify,
    late_sandbox,
    records,
)
from tests.support.streams import stream_entries


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with serve_in_thread(create_sandbox_app(SandboxConfig(app_rps=10))) as url:
        yield url


@pytest.fixture
def sandbox(sandbox_url: str) -> Iterator[httpx.Client]:
    yield from late_sandbox(sandbox_url)


@pytest.fixture
def settings(make_settings: Callable[..., Settings], sandbox_url: str) -> Settings:
    return make_settings(
        shards=1,
        track_url=sandbox_url,
        app_api_key=APP_KEY,
        app_url=sandbox_url,
        late_poll_interval_s=1,
        late_poll_read_share=1.0,
        bulk_drain_budget_s=60,
    )


@pytest.fixture
def poll(settings: Settings, redis_client: redis.Redis) -> Iterator[Callable[[], int]]:
    poller = Poller(settings, redis_client)
    yield poller.walk
    poller.close()


def _drain(settings: Settings, client: redis.Redis) -> None:
    assert drain(settings, client) > 0


def _late(settings: Settings, work: Callable[[LateFailures], Any]) -> Any:
    async def main() -> Any:
        client = connect_async(settings.redis)
        try:
            queue = Queue(client, settings.redis, settings.queue, None)
            return await work(LateFailures(client, queue))
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_each_failure_is_linked_to_its_job_and_producer(
    settings: Settings, redis_client: redis.Redis, sandbox: httpx.Client, poll: Callable[[], int]
) -> None:
    ops = [(identify(n), "billing") for n in range(4)] + [(event(n), "web") for n in range(4, 8)]
    ids = enqueue(redis_client, ops)
    _drain(settings, redis_client)
    assert poll() == 8
    found = {r["activity"]["customer_id"]: r for r in records(redis_client)}
    assert set(found) == set(ids)
    for op, producer in ops:
        person = op["identifiers"]["id"]
        job = found[person]["job"]
        assert job is not None, person
        assert (job["id"], job["producer"], job["lane"]) == (ids[person], producer, "track")
        assert job["payload"] == op
        assert job["accepted_ms"] == int(ids[person].rpartition(":")[2].split("-")[0])
        assert found[person]["reason"]
    counts = redis_client.hgetall(keys.late_counts("default"))
    assert counts == {
        b"track|billing|failed_attribute_change": b"4",
        b"track|web|failed_event": b"4",
    }
    assert poll() == 0  # nothing twice


def test_a_failure_of_a_call_cioq_did_not_send_is_recorded_unlinked(
    settings: Settings, redis_client: redis.Redis, sandbox: httpx.Client, poll: Callable[[], int]
) -> None:
    batch = {"batch": [identify(1)]}
    r = sandbox.post("/api/v2/batch", json=batch, auth=("dev-site", "dev-api-key"))
    assert r.status_code == 200
    assert poll() == 1
    (record,) = records(redis_client)
    assert record["job"] is None and record["person"] == "id=p1"
    counts = redis_client.hgetall(keys.late_counts("default"))
    assert counts == {b"unlinked|unlinked|failed_attribute_change": b"1"}

    page = _late(settings, lambda late: late.page("default", LateFilter(lane="unlinked"), limit=9))
    assert [f.as_dict()["linked"] for f in page.failures] == [False]


def test_no_index_when_the_window_is_zero(
    make_settings: Callable[..., Settings],
    settings: Settings,
    redis_client: redis.Redis,
    sandbox: httpx.Client,
) -> None:
    off = make_settings(**{**_overrides(settings), "late_link_window_s": 0})
    enqueue(redis_client, [(identify(1), "billing")])
    _drain(off, redis_client)
    assert list(redis_client.scan_iter(match="cioq:sent:*")) == []


def _overrides(settings: Settings) -> dict[str, Any]:
    return {
        "shards": 1,
        "track_url": settings.workspace("default").track_url,
        "app_api_key": APP_KEY,
        "app_url": settings.workspace("default").app_url,
    }


def test_remove_person_forgets_every_entry_of_that_person_only(
    settings: Settings, redis_client: redis.Redis, sandbox: httpx.Client
) -> None:
    first, second = event(1), event(2)
    enqueue(redis_client, [(first, "web"), (second, "web")])
    _drain(settings, redis_client)
    activity = {
        "type": "failed_event",
        "name": "signed_up",
        "customer_id": "p1",
        "timestamp": 4_000_000_000,
        "data": {"event_id": first["id"]},
    }
    assert find_sent(redis_client, "default", activity) is not None
    assert remove_person(redis_client, "default", {"id": "p1"}) == 2  # the person and the event
    assert find_sent(redis_client, "default", activity) is None
    assert find_sent(redis_client, "default", {**activity, "data": {}}) is None
    other = {**activity, "customer_id": "p2", "data": {"event_id": second["id"]}}
    assert find_sent(redis_client, "default", other) is not None


def test_a_linked_records_fixed_call_is_resent_once_and_audited(
    settings: Settings, redis_client: redis.Redis, sandbox: httpx.Client, poll: Callable[[], int]
) -> None:
    enqueue(redis_client, [(identify(1), "billing")])
    _drain(settings, redis_client)
    assert poll() == 1
    page = _late(settings, lambda late: late.page("default", LateFilter(), limit=9))
    (record,) = page.failures
    fixed = {**identify(1), "attributes": {"email": "p1+new@example.com", "plan": "pro"}}

    async def race(late: LateFailures) -> list[Any]:
        tries = [late.resend("default", record.id, fixed, strict=False, who="ops") for _ in "ab"]
        return await asyncio.gather(*tries, return_exceptions=True)

    outcomes = _late(settings, race)
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    assert done and all(
        isinstance(o, InvalidRequest) and o.status == 409 for o in outcomes if o not in done
    )
    stream = keys.shard_keys("default", 0, Lane.TRACK).stream
    queued = stream_entries(redis_client, stream)
    assert len(queued) == 1
    (_, fields) = queued[0]
    assert orjson.loads(fields[b"o"]) == fixed and fields[PRODUCER_FIELD] == b"billing"
    again = _late(settings, lambda late: late.get("default", record.id))
    assert again.resent is not None and again.resent["who"] == "ops"
    with pytest.raises(InvalidRequest) as info:
        _late(
            settings, lambda late: late.resend("default", record.id, fixed, strict=False, who="x")
        )
    assert info.value.status == 409
    sandbox.post("/_sandbox/late_failures", json={"rate": 0.0}).raise_for_status()
    _drain(settings, redis_client)
    received = sandbox.get("/_sandbox/received").json()["records"]
    new = [r for r in received if r["op"]["attributes"].get("email") == "p1+new@example.com"]
    assert len(new) == 1
    audit = [f for _, f in stream_entries(redis_client, keys.audit())]
    assert [a[b"action"] for a in audit] == [b"late_resend"]


def test_a_failure_logged_before_its_job_is_indexed_waits_for_it_then_links(
    settings: Settings, redis_client: redis.Redis, sandbox: httpx.Client
) -> None:
    """Customer.io may log a failure before the drain read the 200 and indexed the job: a
    young unlinked failure (and all newer) waits for the next walk, then links."""
    poller = Poller(settings, redis_client, unlinked_wait_s=60)
    try:
        op = identify(1)
        r = sandbox.post("/api/v2/batch", json={"batch": [op]}, auth=("dev-site", "dev-api-key"))
        assert r.status_code == 200
        assert poller.walk() == 0  # no job yet, and the failure is young: not recorded
        shard = keys.shard_keys("default", 0, Lane.TRACK)
        job = v2_job(op)
        entry = Entry(b"1700000000000-0", job.kind, job.payload, shard, "billing")
        now_ms = int(time.time() * 1000)
        indexed = record_sent(
            redis_client, "default", "track", [entry], now_ms, window_s=60, per_person=5
        )
        assert indexed == 1
        assert poller.walk() == 1
        (record,) = records(redis_client)
        assert record["job"]["id"] == f"{shard.tag}:1700000000000-0"
        assert record["job"]["producer"] == "billing"
    finally:
        poller.close()


def test_forgetting_a_person_removes_their_late_failures_and_keeps_the_counts(
    settings: Settings, redis_client: redis.Redis, sandbox: httpx.Client, poll: Callable[[], int]
) -> None:
    enqueue(redis_client, [(identify(1), "billing"), (identify(2), "billing")])
    drain(settings, redis_client)
    assert poll() == 2

    async def forget(late: LateFailures) -> int:
        return await remove_person_failures(late, "default", {"email": "p1@example.com"})

    assert _late(settings, forget) == 1  # named by the job's email, not the activity's id
    assert [r["activity"]["customer_id"] for r in records(redis_client)] == ["p2"]
    counts = redis_client.hgetall(keys.late_counts("default"))
    assert counts == {b"track|billing|failed_attribute_change": b"2"}
