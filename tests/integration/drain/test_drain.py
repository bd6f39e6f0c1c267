"""The drain against real Redis and a real sandbox server: batches, outcomes, fencing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
import redis

from service import keys
from service.config import Settings
from service.delivery.crash_search import InflightNote
from service.errors import LeaseLost
from service.jobs import Lane
from service.store.shards import ShardStore
from tests.support.drain import Clock, build_drainer, dlq, enqueue, person_op, received_ns
from tests.support.sandbox import KEY, SITE
from workers.drain import Drainer


@pytest.fixture
def settings(make_settings: Callable[..., Settings], sandbox_url: str) -> Settings:
    return make_settings(
        shards=1,
        track_url=sandbox_url,
        retry_base_ms=1000,
        max_batch_bytes=20_000,
        max_op_bytes=2000,
        upstream_timeout_s=5,
        bulk_drain_budget_s=60,
    )


# A backlog drains from the bulk queue (a live drain hands it over after one full
# request), so tests that drain a backlog in one call drain it as the bulk queue does.


@pytest.fixture
def drainer(settings: Settings, redis_client: redis.Redis, clock: Clock) -> Drainer:
    return build_drainer(settings, redis_client, clock)


def test_drains_everything_in_order_in_full_batches(
    drainer: Drainer, redis_client: redis.Redis, sandbox: httpx.Client
) -> None:
    """All ops leave in order, in batches filled to the byte limit, and the stream empties."""
    enqueue(redis_client, [person_op(i) for i in range(300)])
    report = drainer.drain("default", 0, Lane.TRACK, bulk=True)
    assert report.stopped == "empty"
    assert received_ns(sandbox) == list(range(300))
    sizes = [r["body_bytes"] for r in sandbox.get("/_sandbox/requests").json()["records"]]
    assert max(sizes) <= 20_000
    assert all(s > 20_000 - 300 for s in sizes[:-1])
    assert redis_client.xlen(keys.shard_keys("default", 0, Lane.TRACK).stream) == 0


def test_lingers_when_batch_not_full(
    make_settings: Callable[..., Settings],
    sandbox_url: str,
    redis_client: redis.Redis,
    sandbox: httpx.Client,
) -> None:
    """A young, small head waits for the linger time instead of going out alone."""
    d = build_drainer(
        make_settings(shards=1, track_url=sandbox_url, linger_ms=60_000), redis_client
    )
    enqueue(redis_client, [person_op(1)])
    report = d.drain("default", 0, Lane.TRACK)
    assert report.stopped == "linger"
    assert report.retrigger_s is not None and 0 < report.retrigger_s <= 60
    assert received_ns(sandbox) == []


def test_busy_shard_is_left_to_its_lease_holder(
    drainer: Drainer, redis_client: redis.Redis
) -> None:
    """A second drain of a leased shard returns at once and touches nothing."""
    enqueue(redis_client, [person_op(1)])
    store = ShardStore(redis_client)
    assert store.acquire(keys.shard_keys("default", 0, Lane.TRACK), lease_ms=10_000)
    assert drainer.drain("default", 0, Lane.TRACK).stopped == "busy"
    assert redis_client.xlen(keys.shard_keys("default", 0, Lane.TRACK).stream) == 1


def test_stale_lease_holder_is_fenced_out(redis_client: redis.Redis) -> None:
    """After a lease expires and is retaken, the old token can neither resolve nor renew."""
    store = ShardStore(redis_client)
    shard = keys.shard_keys("default", 0, Lane.TRACK)
    enqueue(redis_client, [person_op(1)])
    old = store.acquire(shard, lease_ms=1000)
    assert old
    redis_client.delete(shard.lease)  # the lease ran out
    new = store.acquire(shard, lease_ms=1000)
    assert new and new.token > old.token
    head = store.read(shard, after=None, count=1)[0]
    with pytest.raises(LeaseLost):
        old.resolve(head.id)
    with pytest.raises(LeaseLost):
        old.renew()
    with pytest.raises(LeaseLost):
        old.mark_inflight(InflightNote(head.id, 1))
    with pytest.raises(LeaseLost):
        old.record_attempt(head=head.id, now_ms=1, not_before_ms=2, label="503")
    assert new.resolve(head.id) == 1


def test_transient_error_backs_off_then_delivers(
    drainer: Drainer, redis_client: redis.Redis, sandbox: httpx.Client, clock: Clock
) -> None:
    """A 503 keeps the ops, records the attempt, and the shard retries after the backoff."""
    enqueue(redis_client, [person_op(i) for i in range(5)])
    sandbox.post("/_sandbox/faults", json={"status_sequence": [503]})
    first = drainer.drain("default", 0, Lane.TRACK)
    assert first.stopped == "backoff"
    assert first.retrigger_s == 1.0  # base 1000 ms, rng fixed at 1.0
    state = ShardStore(redis_client).retry_state(keys.shard_keys("default", 0, Lane.TRACK))
    assert state.attempts == 1 and state.history[0][1] == "503"
    assert drainer.drain("default", 0, Lane.TRACK).stopped == "backoff"  # too early: nothing sent
    clock.offset_s += 1.5
    assert drainer.drain("default", 0, Lane.TRACK).stopped == "empty"
    assert received_ns(sandbox) == list(range(5))
    assert not redis_client.exists(keys.shard_keys("default", 0, Lane.TRACK).retry)


def test_retry_budget_spent_dead_letters_with_history(
    make_settings: Callable[..., Settings],
    sandbox_url: str,
    redis_client: redis.Redis,
    sandbox: httpx.Client,
    clock: Clock,
) -> None:
    """After the last allowed attempt the batch goes to the DLQ with every attempt."""
    s = make_settings(shards=1, track_url=sandbox_url, retry_max_attempts=3, retry_base_ms=10)
    d = build_drainer(s, redis_client, clock)
    enqueue(redis_client, [person_op(i) for i in range(2)])
    sandbox.post("/_sandbox/faults", json={"status_sequence": [500, 502, 503]})
    for _ in range(3):
        d.drain("default", 0, Lane.TRACK)
        clock.offset_s += 1
    letters = dlq(redis_client)
    assert len(letters) == 2
    attempts = orjson.loads(letters[0][b"attempts"])
    assert [a["status"] for a in attempts] == ["500", "502", "503"]
    assert letters[0][b"reason"] == b"max_attempts"
    assert redis_client.xlen(keys.shard_keys("default", 0, Lane.TRACK).stream) == 0


def test_partial_207_dead_letters_only_named_ops(
    drainer: Drainer, redis_client: redis.Redis, sandbox: httpx.Client
) -> None:
    """A 207 naming 3 ops dead-letters exactly those; the rest are delivered once."""
    ops = [person_op(i) for i in range(50)]
    for i in (3, 17, 41):
        ops[i]["attributes"]["sandbox_poison"] = "207"
    enqueue(redis_client, ops)
    assert drainer.drain("default", 0, Lane.TRACK).stopped == "empty"
    assert sorted(received_ns(sandbox)) == [i for i in range(50) if i not in (3, 17, 41)]
    letters = dlq(redis_client)
    assert sorted(orjson.loads(f[b"payload"])["attributes"]["n"] for f in letters) == [3, 17, 41]
    assert {f[b"cls"] for f in letters} == {b"partial"}


def test_whole_batch_400_is_bisected_to_the_poison_ops(
    make_settings: Callable[..., Settings],
    sandbox_url: str,
    redis_client: redis.Redis,
    sandbox: httpx.Client,
) -> None:
    """2 poison ops among 1,000 make the batch 400: only they are dead-lettered."""
    s = make_settings(shards=1, track_url=sandbox_url, max_ops_per_read=1000)
    d = build_drainer(s, redis_client)
    ops: list[dict[str, Any]] = [
        {
            "type": "person",
            "action": "identify",
            "identifiers": {"id": f"p{i}"},
            "attributes": {"n": i},
        }
        for i in range(1000)
    ]
    for i in (123, 877):
        ops[i]["attributes"]["sandbox_poison"] = "400"
    enqueue(redis_client, ops)
    report = d.drain("default", 0, Lane.TRACK)
    assert report.stopped == "empty"
    assert sorted(received_ns(sandbox)) == [i for i in range(1000) if i not in (123, 877)]
    assert sorted(orjson.loads(f[b"payload"])["attributes"]["n"] for f in dlq(redis_client)) == [
        123,
        877,
    ]
    assert report.bisect_requests <= 2 * 10 * 2  # 2 · log2(1000) · poison count


def test_stop_during_bisection_hands_the_rest_back(
    make_settings: Callable[..., Settings],
    sandbox_url: str,
    redis_client: redis.Redis,
    sandbox: httpx.Client,
) -> None:
    """A worker told to stop mid-bisection releases the shard; the next one finishes."""
    s = make_settings(shards=1, track_url=sandbox_url, max_ops_per_read=1000)
    ops = [person_op(i) for i in range(64)]
    ops[40]["attributes"]["sandbox_poison"] = "400"
    enqueue(redis_client, ops)
    stopping = build_drainer(s, redis_client)
    stopping.should_stop = lambda: len(sandbox.get("/_sandbox/requests").json()["records"]) >= 3
    report = stopping.drain("default", 0, Lane.TRACK)
    assert report.stopped == "shutdown"
    shard = keys.shard_keys("default", 0, Lane.TRACK)
    assert not redis_client.exists(shard.lease) and not redis_client.exists(shard.inflight)
    assert redis_client.xlen(shard.stream) == 64 - len(received_ns(sandbox)) > 0
    assert build_drainer(s, redis_client).drain("default", 0, Lane.TRACK).stopped == "empty"
    assert received_ns(sandbox) == [i for i in range(64) if i != 40]
    assert [orjson.loads(f[b"payload"])["attributes"]["n"] for f in dlq(redis_client)] == [40]


def test_429_pauses_the_workspace_for_retry_after(
    drainer: Drainer, redis_client: redis.Redis, sandbox: httpx.Client
) -> None:
    """A 429 with Retry-After: 2 pauses every shard of the workspace for 2 s."""
    enqueue(redis_client, [person_op(1)])
    sandbox.post("/_sandbox/faults", json={"status_sequence": [429], "retry_after_s": 2})
    report = drainer.drain("default", 0, Lane.TRACK)
    assert report.stopped == "throttled"
    pttl = redis_client.pttl(keys.pause("default", Lane.TRACK))
    assert 1000 < pttl <= 2000
    assert drainer.drain("default", 0, Lane.TRACK).stopped == "paused"
    assert dlq(redis_client) == []


@pytest.mark.parametrize(
    ("first_ms", "then_ms", "kept"),
    [
        (60_000, 2_000, "first"),  # an operator's pause outlives an in-flight request's 429
        (2_000, 60_000, "then"),  # a longer Retry-After extends a short one
        (None, 2_000, "first"),  # a pause without expiry stays without expiry
        (0, 2_000, "then"),  # no pause yet
    ],
)
def test_a_pause_is_never_shortened(
    redis_client: redis.Redis, first_ms: int | None, then_ms: int, kept: str
) -> None:
    store, key = ShardStore(redis_client), keys.pause("default", Lane.TRACK)
    if first_ms is None:
        redis_client.set(key, "first")
    elif first_ms:
        store.pause("default", Lane.TRACK, cause="first", duration_ms=first_ms)
    store.pause("default", Lane.TRACK, cause="then", duration_ms=then_ms)
    assert redis_client.get(key) == kept.encode()
    expected_ms = {None: -1, 0: then_ms}.get(first_ms, max(first_ms or 0, then_ms))
    assert expected_ms - 1000 < redis_client.pttl(key) <= expected_ms


def test_a_pause_set_mid_drain_stops_the_next_send(
    settings: Settings, redis_client: redis.Redis, sandbox: httpx.Client
) -> None:
    """Another worker's 429 pause stops a running drain before its next batch.

    The clock is frozen, so a pause check that is only due every PAUSE_CHECK_S would not
    run again; the batch lanes look before every send (issue: a drain that gathered the
    throttled drain's shards sent them 27 ms after the 429).
    """
    enqueue(redis_client, [person_op(i) for i in range(300)])
    drainer = build_drainer(settings, redis_client, clock=lambda: 1_800_000_000.0)
    calls = 0

    def another_worker_is_throttled() -> bool:
        nonlocal calls
        calls += 1
        if calls == 2:  # after the first send: the loop's second turn
            ShardStore(redis_client).pause(
                "default", Lane.TRACK, cause="throttle", duration_ms=5000
            )
        return False

    drainer.should_stop = another_worker_is_throttled
    report = drainer.drain("default", 0, Lane.TRACK, bulk=True)
    assert report.stopped == "paused"
    assert len(sandbox.get("/_sandbox/requests").json()["records"]) == 1
    assert 0 < len(received_ns(sandbox)) < 300


def test_401_pauses_keeps_jobs_and_resumes_when_fixed(
    drainer: Drainer, redis_client: redis.Redis, sandbox: httpx.Client
) -> None:
    """Bad credentials pause the workspace, dead-letter nothing, and delivery resumes."""
    enqueue(redis_client, [person_op(i) for i in range(3)])
    sandbox.post("/_sandbox/credentials", json={"site_id": SITE, "api_key": "rotated"})
    assert drainer.drain("default", 0, Lane.TRACK).stopped == "setup"
    assert redis_client.get(keys.pause("default", Lane.TRACK)) == b"setup:401"
    assert dlq(redis_client) == []
    sandbox.post("/_sandbox/credentials", json={"site_id": SITE, "api_key": KEY})
    redis_client.delete(keys.pause("default", Lane.TRACK))  # the pause ran out
    assert drainer.drain("default", 0, Lane.TRACK).stopped == "empty"
    assert received_ns(sandbox) == [0, 1, 2]


def test_crash_loop_quarantines_a_head_that_died_alone(
    drainer: Drainer, redis_client: redis.Redis, sandbox: httpx.Client, settings: Settings
) -> None:
    """A head whose lone sends keep dying is quarantined as crash_loop; the rest flow."""
    enqueue(redis_client, [person_op(i) for i in range(4)])
    store = ShardStore(redis_client)
    shard = keys.shard_keys("default", 0, Lane.TRACK)
    head = store.read(shard, after=None, count=1)[0]
    lease = store.acquire(shard, lease_ms=1000)
    assert lease
    # The last holder died sending the head alone, for the limit's last time but one.
    note = InflightNote(head.id, 1, settings.drain.crash_limit - 1, head.id)
    lease.mark_inflight(note)
    redis_client.delete(shard.lease)
    assert store.inflight_note(shard) == note
    assert drainer.drain("default", 0, Lane.TRACK).stopped == "empty"
    letters = dlq(redis_client)
    assert [f[b"reason"] for f in letters] == [b"crash_loop"]
    assert received_ns(sandbox) == [1, 2, 3]


def test_send_after_a_death_is_halved(
    drainer: Drainer, redis_client: redis.Redis, sandbox: httpx.Client
) -> None:
    """The next holder sends half of what died, then goes on to the rest."""
    enqueue(redis_client, [person_op(i) for i in range(8)])
    store = ShardStore(redis_client)
    shard = keys.shard_keys("default", 0, Lane.TRACK)
    head = store.read(shard, after=None, count=1)[0]
    lease = store.acquire(shard, lease_ms=1000)
    assert lease
    lease.mark_inflight(InflightNote(head.id, 8))
    redis_client.delete(shard.lease)
    assert drainer.drain("default", 0, Lane.TRACK, bulk=True).stopped == "empty"
    sizes = [r["op_count"] for r in sandbox.get("/_sandbox/requests").json()["records"]]
    assert sizes[0] == 4 and sum(sizes) == 8
    assert received_ns(sandbox) == list(range(8))


def test_oversize_op_is_dead_lettered_never_sent(
    drainer: Drainer, redis_client: redis.Redis, sandbox: httpx.Client
) -> None:
    """An op over max_op_bytes (limits tightened after it was queued) is reported, not sent."""
    enqueue(redis_client, [person_op(0), person_op(1, big="y" * 40_000), person_op(2)])
    assert drainer.drain("default", 0, Lane.TRACK, bulk=True).stopped == "empty"
    assert received_ns(sandbox) == [0, 2]
    assert [f[b"reason"] for f in dlq(redis_client)] == [b"op_too_large"]
