"""Requests that span shards, made on purpose: one drain packs the heads of several shards
of a workspace, and every outcome lands on the right shard (real Redis, real sandbox)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import httpx
import orjson
import pytest
import redis

from service import keys
from service.config import Settings
from service.delivery.crash_search import InflightNote
from service.jobs import Lane, Traffic, shard_for
from service.lanes.track.jobs import v2_job
from service.store.shards import ShardStore
from service.triggers import Triggers
from tests.support.drain import Clock, build_drainer, dlq, received_ns
from tests.support.triggers import RecordingTriggers

SHARDS = 4


@pytest.fixture
def settings(make_settings: Callable[..., Settings], sandbox_url: str) -> Settings:
    return make_settings(
        shards=SHARDS,
        track_url=sandbox_url,
        max_batch_bytes=200_000,
        max_op_bytes=2000,
        upstream_timeout_s=5,
        bulk_drain_budget_s=60,
    )


def op(n: int, person: int | None = None, **attrs: Any) -> dict[str, Any]:
    return {
        "type": "person",
        "action": "identify",
        "identifiers": {"id": f"p{n if person is None else person}"},
        "attributes": {"n": n, **attrs},
    }


def shard_of(item: dict[str, Any]) -> int:
    return shard_for("default", v2_job(item).route, SHARDS)


def on_shard(shard: int) -> dict[str, Any]:
    return next(o for o in map(op, range(100)) if shard_of(o) == shard)


def enqueue(
    client: redis.Redis, ops: list[dict[str, Any]], traffic: Traffic = Traffic.LIVE
) -> None:
    for item in ops:
        job = v2_job(item)
        stream = keys.shard_keys("default", shard_of(item), Lane.TRACK, traffic=traffic).stream
        client.xadd(stream, {job.field: job.payload})


def requests(sandbox: httpx.Client) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = sandbox.get("/_sandbox/requests").json()["records"]
    return records


def received(sandbox: httpx.Client) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = sandbox.get("/_sandbox/received").json()["records"]
    return records


def backlog(client: redis.Redis, traffic: Traffic = Traffic.LIVE) -> int:
    return sum(
        int(client.xlen(keys.shard_keys("default", s, Lane.TRACK, traffic=traffic).stream))
        for s in range(SHARDS)
    )


def leased(client: redis.Redis) -> list[int]:
    return [
        s for s in range(SHARDS) if client.exists(keys.shard_keys("default", s, Lane.TRACK).lease)
    ]


def test_one_request_carries_every_shards_waiting_ops(
    settings: Settings, redis_client: redis.Redis, sandbox: httpx.Client
) -> None:
    ops = [op(n) for n in range(40)]
    assert len({shard_of(o) for o in ops}) == SHARDS
    enqueue(redis_client, ops)
    report = build_drainer(settings, redis_client).drain("default", 0, Lane.TRACK)
    assert report.stopped == "empty"
    assert report.shards_held == SHARDS
    assert [r["op_count"] for r in requests(sandbox)] == [40]
    assert sorted(received_ns(sandbox)) == list(range(40))
    assert backlog(redis_client) == 0 and leased(redis_client) == []


def test_per_shard_packing_stays_available_behind_a_setting(
    make_settings: Callable[..., Settings],
    sandbox_url: str,
    redis_client: redis.Redis,
    sandbox: httpx.Client,
) -> None:
    s = make_settings(shards=SHARDS, track_url=sandbox_url, pack_across_shards=False)
    ops = [op(n) for n in range(40)]
    enqueue(redis_client, ops)
    report = build_drainer(s, redis_client).drain("default", 0, Lane.TRACK)
    assert report.shards_held == 1
    own = [o["attributes"]["n"] for o in ops if shard_of(o) == 0]
    assert received_ns(sandbox) == own


def test_linger_counts_from_the_oldest_op_whichever_shard_holds_it(
    make_settings: Callable[..., Settings],
    sandbox_url: str,
    redis_client: redis.Redis,
    sandbox: httpx.Client,
    clock: Clock,
) -> None:
    s = make_settings(shards=SHARDS, track_url=sandbox_url, linger_ms=1000)
    old, fresh = on_shard(2), on_shard(0)
    now_ms = int(time.time() * 1000)
    job = v2_job(old)
    redis_client.xadd(
        keys.shard_keys("default", 2, Lane.TRACK).stream,
        {job.field: job.payload},
        id=f"{now_ms - 500}-0",
    )
    enqueue(redis_client, [fresh])
    drainer = build_drainer(s, redis_client, clock)
    first = drainer.drain("default", 0, Lane.TRACK)
    assert first.stopped == "linger"
    # The drain's own op has just come; the other shard's op has waited 500 ms already.
    assert first.retrigger_s is not None and first.retrigger_s <= 0.5
    clock.offset_s += 0.6
    assert drainer.drain("default", 0, Lane.TRACK).stopped == "empty"
    assert [r["op_count"] for r in requests(sandbox)] == [2]


def test_207_batch_index_lands_on_the_right_shards_op(
    settings: Settings, redis_client: redis.Redis, sandbox: httpx.Client
) -> None:
    ops = [op(n) for n in range(60)]
    poisoned = [next(o for o in ops if shard_of(o) == s)["attributes"]["n"] for s in (1, 3)]
    for n in poisoned:
        ops[n]["attributes"]["sandbox_poison"] = "207"
    enqueue(redis_client, ops)
    assert build_drainer(settings, redis_client).drain("default", 0, Lane.TRACK).stopped == "empty"
    assert len(requests(sandbox)) == 1
    assert sorted(received_ns(sandbox)) == [n for n in range(60) if n not in poisoned]
    letters = dlq(redis_client)
    got = {orjson.loads(f[b"payload"])["attributes"]["n"]: f[b"source"] for f in letters}
    assert sorted(got) == sorted(poisoned)
    for n, source in got.items():
        assert source.decode().split(":")[1] == str(shard_of(ops[n]))
    assert backlog(redis_client) == 0


def test_400_is_bisected_across_shards_in_each_persons_order(
    settings: Settings, redis_client: redis.Redis, sandbox: httpx.Client
) -> None:
    # 30 people with 8 ops each, spread over every shard; two poison ops on two shards.
    ops = [op(n, person=n % 30, seq=n // 30) for n in range(240)]
    for n in (37, 190):
        ops[n]["attributes"]["sandbox_poison"] = "400"
    assert shard_of(ops[37]) != shard_of(ops[190])
    enqueue(redis_client, ops)
    report = build_drainer(settings, redis_client).drain("default", 0, Lane.TRACK)
    assert report.stopped == "empty"
    assert report.bisect_requests <= 2 * 8 * 2
    records = sandbox.get("/_sandbox/received", params={"limit": 1000}).json()["records"]
    per_person: dict[str, list[int]] = {}
    for record in records:
        person = record["op"]["identifiers"]["id"]
        per_person.setdefault(person, []).append(record["op"]["attributes"]["seq"])
    expected: dict[str, list[int]] = {}
    for n, item in enumerate(ops):
        if n not in (37, 190):
            expected.setdefault(item["identifiers"]["id"], []).append(n // 30)
    assert per_person == expected  # exactly once, in order, per person
    assert sorted(orjson.loads(f[b"payload"])["attributes"]["n"] for f in dlq(redis_client)) == [
        37,
        190,
    ]
    assert backlog(redis_client) == 0 and leased(redis_client) == []


def test_a_request_that_died_is_searched_shard_by_shard(
    settings: Settings, redis_client: redis.Redis, sandbox: httpx.Client
) -> None:
    """A multi-shard send died: each of its shards then goes alone, halved, and nothing
    innocent is quarantined."""
    ops = [op(n) for n in range(40)]
    enqueue(redis_client, ops)
    store = ShardStore(redis_client)
    died = {}
    for s in (0, 2):
        shard = keys.shard_keys("default", s, Lane.TRACK)
        entries = store.read(shard, after=None, count=100)
        lease = store.acquire(shard, lease_ms=1000)
        assert lease
        lease.mark_inflight(InflightNote(entries[0].id, len(entries)))
        redis_client.delete(shard.lease)
        died[s] = len(entries)
    report = build_drainer(settings, redis_client).drain("default", 0, Lane.TRACK, bulk=True)
    assert report.stopped == "empty"
    sent = requests(sandbox)
    # First the two suspect shards, each alone with half of what died, then the rest.
    assert sorted(r["op_count"] for r in sent[:2]) == sorted(n // 2 for n in died.values())
    arrived = [shard_of(r["op"]) for r in received(sandbox)]
    first, second = sent[0]["op_count"], sent[1]["op_count"]
    assert len(set(arrived[:first])) == 1 and len(set(arrived[first : first + second])) == 1
    assert {arrived[0], arrived[first]} == {0, 2}
    assert sorted(received_ns(sandbox)) == list(range(40))
    assert dlq(redis_client) == []


def test_a_backing_off_shard_is_never_packed_into_another_request(
    settings: Settings, redis_client: redis.Redis, sandbox: httpx.Client, clock: Clock
) -> None:
    ops = [op(n) for n in range(40)]
    enqueue(redis_client, ops)
    waiting = keys.shard_keys("default", 2, Lane.TRACK)
    redis_client.hset(waiting.retry, mapping={"not_before_ms": int(time.time() * 1000) + 60_000})
    assert (
        build_drainer(settings, redis_client, clock).drain("default", 0, Lane.TRACK).stopped
        == "empty"
    )
    assert sorted(received_ns(sandbox)) == sorted(
        o["attributes"]["n"] for o in ops if shard_of(o) != 2
    )
    assert redis_client.xlen(waiting.stream) == sum(1 for o in ops if shard_of(o) == 2)


def test_a_transient_failure_backs_off_every_shard_of_the_request(
    settings: Settings, redis_client: redis.Redis, sandbox: httpx.Client, clock: Clock
) -> None:
    enqueue(redis_client, [op(n) for n in range(40)])
    sandbox.post("/_sandbox/faults", json={"status_sequence": [503]})
    triggers = RecordingTriggers()
    drainer = build_drainer(settings, redis_client, clock)
    drainer.triggers = cast(Triggers, triggers)  # records what it is asked to send
    report = drainer.drain("default", 0, Lane.TRACK)
    assert report.stopped == "backoff"
    store = ShardStore(redis_client)
    for s in range(SHARDS):
        state = store.retry_state(keys.shard_keys("default", s, Lane.TRACK))
        assert state.attempts == 1 and state.not_before_ms > time.time() * 1000
    clock.offset_s += 2
    assert drainer.drain("default", 0, Lane.TRACK).stopped == "empty"
    assert sorted(received_ns(sandbox)) == list(range(40))


def test_a_shard_with_a_backlog_of_its_own_is_left_to_its_own_drain(
    make_settings: Callable[..., Settings],
    sandbox_url: str,
    redis_client: redis.Redis,
    sandbox: httpx.Client,
) -> None:
    s = make_settings(shards=SHARDS, track_url=sandbox_url, max_ops_per_read=50)
    busy = [o for o in map(op, range(2000)) if shard_of(o) == 1][:60]
    mine = on_shard(0)
    enqueue(redis_client, [mine, *busy])
    report = build_drainer(s, redis_client).drain("default", 0, Lane.TRACK)
    assert report.stopped == "empty" and report.shards_held == 1
    assert received_ns(sandbox) == [mine["attributes"]["n"]]


def test_a_live_drain_sends_once_before_it_hands_a_backlog_to_the_bulk_queue(
    settings: Settings, redis_client: redis.Redis, sandbox: httpx.Client, clock: Clock
) -> None:
    """Every live drain moves a backlogged lane on by a request, then hands it over.

    Handing over first made no progress when the workers were all busy with live
    triggers, since the bulk queue runs only when the live one is empty.
    """
    enqueued_s = time.time()
    enqueue(redis_client, [op(n, pad="x" * 900) for n in range(800)])  # ~4 full requests
    # The drain runs as if at once: a loaded machine's slow enqueue must not age the head past
    # the trigger marker, which is the next test's case (handed over without a send).
    clock.offset_s = enqueued_s - time.time()
    triggers = RecordingTriggers()
    drainer = build_drainer(settings, redis_client, clock)
    drainer.triggers = cast(Triggers, triggers)
    report = drainer.drain("default", 0, Lane.TRACK)
    assert report.stopped == "backlog"
    [sent] = requests(sandbox)
    assert sent["body_bytes"] > 0.9 * 200_000
    assert (Traffic.LIVE, True) in triggers.queues  # the rest goes to the bulk queue
    assert backlog(redis_client) == 800 - sent["op_count"]


def test_bulk_jobs_never_share_a_request_with_live_ones(
    settings: Settings, redis_client: redis.Redis, sandbox: httpx.Client
) -> None:
    enqueue(redis_client, [op(n) for n in range(10)])
    enqueue(redis_client, [op(n) for n in range(100, 110)], Traffic.BULK)
    drainer = build_drainer(settings, redis_client)
    assert drainer.drain("default", 0, Lane.TRACK).stopped == "empty"
    assert sorted(received_ns(sandbox)) == list(range(10))
    assert backlog(redis_client, Traffic.BULK) == 10
    report = drainer.drain("default", 0, Lane.TRACK, traffic=Traffic.BULK)
    assert report.stopped == "empty" and report.bulk
    assert sorted(received_ns(sandbox)) == [*range(10), *range(100, 110)]


def test_a_live_drain_whose_head_outwaited_the_trigger_marker_hands_over_without_sending(
    settings: Settings, redis_client: redis.Redis, sandbox: httpx.Client, clock: Clock
) -> None:
    """A live trigger left from a time no worker ran finds a backlog: it goes to the bulk
    queue at once. A full request per such trigger held the live events queued behind
    them for seconds after an outage (issue 27)."""
    enqueue(redis_client, [op(n, pad="x" * 900) for n in range(800)])  # ~4 full requests
    clock.offset_s += 2 * settings.queue.trigger_ttl_ms / 1000
    triggers = RecordingTriggers()
    drainer = build_drainer(settings, redis_client, clock)
    drainer.triggers = cast(Triggers, triggers)
    report = drainer.drain("default", 0, Lane.TRACK)
    assert report.stopped == "backlog" and report.requests == 0
    assert requests(sandbox) == []
    assert triggers.queues and all(queue == (Traffic.LIVE, True) for queue in triggers.queues)
    assert backlog(redis_client) == 800 and leased(redis_client) == []
