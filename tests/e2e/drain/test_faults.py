"""Delivery semantics with real processes: sandbox faults, kills, SIGTERM, DLQ round trip.

Each test runs its own redis-server, sandbox, api, sweeper and Celery workers, injects a
fault at the sandbox, and checks at the sandbox and in Redis what cioq made of it.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from service import keys
from service.jobs import Lane
from tests.support.load import produce, received_by_person, seq_of
from tests.support.processes import wait_until
from tests.support.scale import sized
from tests.support.stack import ADMIN_KEY, API_KEY, INGEST_KEY, SITE_ID, Stack
from tests.support.streams import stream_fields

DLQ = keys.dead_letters("default")


def _faults(stack: Stack, **config: Any) -> None:
    with stack.sandbox_client() as sandbox:
        sandbox.post("/_sandbox/faults", json=config).raise_for_status()


def _ops(person: str, count: int, poison: dict[int, str] | None = None) -> list[dict[str, Any]]:
    ops = []
    for seq in range(count):
        attributes: dict[str, Any] = {"seq": seq}
        if poison and seq in poison:
            attributes["sandbox_poison"] = poison[seq]
        ops.append(
            {
                "type": "person",
                "action": "identify",
                "identifiers": {"id": person},
                "attributes": attributes,
            }
        )
    return ops


def _post_batch(stack: Stack, ops: list[dict[str, Any]]) -> None:
    r = httpx.post(
        f"{stack.api_url}/api/v2/batch",
        json={"batch": ops},
        auth=(SITE_ID, INGEST_KEY),
        timeout=30,
    )
    assert r.status_code == 200, r.text


def _seqs(stack: Stack, person: str) -> list[int]:
    return [
        seq
        for p, seq in (seq_of(r["op"]) for r in stack.received() if r["kind"] == "v2")
        if p == person
    ]


def _admin(stack: Stack) -> httpx.Client:
    return httpx.Client(
        base_url=f"{stack.api_url}/admin/v1/workspaces/default/dead-letters",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    )


def test_207_and_400_dead_letter_only_the_named_ops_then_replay_round_trip(
    stack_with: Callable[..., Stack],
) -> None:
    """207 naming 3 of 1,000 → those 3 dead; 400 from 2 poison of 1,000 → bisected to 2.

    Then the DLQ round trip: ops dead-lettered by a fault → listed → fault fixed → replayed
    → delivered with their event ids, DLQ emptied of them; purge by filter removes only
    what matches.
    """
    stack = stack_with(shards=1)
    stack.start_worker(concurrency=1)
    redis = stack.redis.client()

    # 207: one request of 1,000 ops, three of them refused by Customer.io
    _post_batch(stack, _ops("p207", 1000, {10: "207", 500: "207", 999: "207"}))
    wait_until(lambda: redis.xlen(DLQ) == 3, timeout_s=60, what="3 dead letters")
    wait_until(lambda: len(_seqs(stack, "p207")) >= 997, timeout_s=60, what="997 delivered")
    assert _seqs(stack, "p207") == [s for s in range(1000) if s not in (10, 500, 999)]
    with _admin(stack) as admin:
        partial = admin.get("", params={"class": "partial"}).json()["dead_letters"]
    assert sorted(d["payload"]["attributes"]["seq"] for d in partial) == [10, 500, 999]
    assert {(d["reason"], d["field"], d["status"]) for d in partial} == {
        ("invalid", "attributes.sandbox_poison", 207)
    }
    batch_requests_before = len([r for r in stack.requests() if r["path"] == "/api/v2/batch"])

    # 400: two poison ops make the whole batch invalid; bisection isolates exactly them
    _post_batch(stack, _ops("p400", 1000, {123: "400", 877: "400"}))
    wait_until(lambda: redis.xlen(DLQ) == 5, timeout_s=60, what="2 more dead letters")
    wait_until(lambda: len(_seqs(stack, "p400")) >= 998, timeout_s=60, what="998 delivered")
    assert _seqs(stack, "p400") == [s for s in range(1000) if s not in (123, 877)]
    requests = [r for r in stack.requests() if r["path"] == "/api/v2/batch"]
    extra = len(requests) - batch_requests_before - 1
    assert 0 < extra <= 2 * 10 * 2, extra  # 2 · log2(1000) · poison ops

    # Round trip: a fault dead-letters five events; the operator fixes it and replays them
    _faults(stack, error_rate=1.0, error_status=400)
    events = [
        {"type": "person", "action": "event", "identifiers": {"id": "rt"}, "name": f"e{i}"}
        for i in range(5)
    ]
    _post_batch(stack, events)
    wait_until(lambda: redis.xlen(DLQ) == 10, timeout_s=60, what="5 events dead-lettered")
    with _admin(stack) as admin:
        dead = admin.get("", params={"person": "rt"}).json()["dead_letters"]
        assert [d["payload"]["name"] for d in dead] == [f"e{i}" for i in range(5)]
        ids = [d["payload"]["id"] for d in dead]
        _faults(stack)  # the cause is fixed
        dry = admin.post("/replay", json={"person": "rt", "dry_run": True}).json()
        assert dry == {"matched": 5, "replayed": 0, "dry_run": True}
        assert admin.post("/replay", json={"person": "rt"}).json()["replayed"] == 5

        def replayed() -> list[dict[str, Any]]:
            return [r["op"] for r in stack.received() if r["op"]["identifiers"] == {"id": "rt"}]

        wait_until(lambda: len(replayed()) == 5, timeout_s=60, what="replayed events")
        assert [op["id"] for op in replayed()] == ids
        assert admin.get("", params={"person": "rt"}).json()["dead_letters"] == []
        # Purge by filter: only the 207 letters go, the 400 ones stay
        purged = admin.post("/purge", json={"class": "partial"}).json()
        assert purged == {"matched": 3, "purged": 3, "dry_run": False}
        left = admin.get("").json()["dead_letters"]
    assert sorted(d["payload"]["attributes"]["seq"] for d in left) == [123, 877]


def test_429_retry_after_pauses_every_worker(stack_with: Callable[..., Stack]) -> None:
    """A 429 with Retry-After: 2 seen by one worker stops all workers' requests for 2 s."""
    stack = stack_with()
    # Requests now carry every shard's waiting ops, so there are few batches.
    _faults(stack, latency_ms=30, status_sequence=[200, 429], retry_after_s=2)
    people = [f"t-{i}" for i in range(200)]
    produced = asyncio.run(produce(stack.api_url, (SITE_ID, INGEST_KEY), people, per_person=10))
    stack.start_worker(concurrency=2)
    stack.start_worker(concurrency=2)
    wait_until(
        lambda: len(stack.received()) >= produced.total,
        timeout_s=120,
        interval_s=0.5,
        what="every job after the pause",
    )
    log = sorted(stack.requests(), key=lambda r: r["received_at"])
    [throttled] = [r for r in log if r["status"] == 429]
    t429 = throttled["received_at"]
    # Requests already on the wire when the 429 came back may still land just after it.
    during = [r for r in log if t429 + 0.25 < r["received_at"] < t429 + 2.0]
    assert during == []
    assert any(r["received_at"] >= t429 + 2.0 for r in log)
    assert stack.redis.client().xlen(DLQ) == 0


def test_401_pauses_without_dead_letters_and_resumes_once_fixed(
    stack_with: Callable[..., Stack],
) -> None:
    """Bad credentials: jobs are kept (nothing dead-lettered) and flow once fixed."""
    stack = stack_with(setup_pause_ms=500)
    with stack.sandbox_client() as sandbox:
        sandbox.post(
            "/_sandbox/credentials", json={"site_id": SITE_ID, "api_key": "rotated"}
        ).raise_for_status()
    people = [f"c-{i}" for i in range(50)]
    produced = asyncio.run(produce(stack.api_url, (SITE_ID, INGEST_KEY), people, per_person=4))
    stack.start_worker(concurrency=2)

    def refusals() -> int:
        return sum(1 for r in stack.requests() if r["status"] == 401)

    wait_until(lambda: refusals() >= 3, timeout_s=60, what="repeated 401s")
    assert stack.received() == []
    assert stack.redis.client().xlen(DLQ) == 0
    with stack.sandbox_client() as sandbox:
        sandbox.post(
            "/_sandbox/credentials", json={"site_id": SITE_ID, "api_key": API_KEY}
        ).raise_for_status()
    wait_until(
        lambda: len(stack.received()) >= produced.total,
        timeout_s=60,
        what="delivery after the fix",
    )
    assert stack.redis.client().xlen(DLQ) == 0


@pytest.mark.load
def test_30_percent_5xx_loses_nothing_and_keeps_order(stack_with: Callable[..., Stack]) -> None:
    """Ops through a sandbox failing 30% of requests: all delivered, once, in order.

    The short form's 16 KB requests make its 5,000 ops dozens of sends, so the faults land
    all through the drain, as the soak's 20,000 ops in full requests do."""
    stack = stack_with(
        retry_base_ms=20,
        retry_cap_ms=500,
        max_op_bytes=4096,
        max_batch_bytes=sized(16_000, 500_000),
    )
    _faults(stack, error_rate=0.3, error_status=503, seed=11)
    people = [f"f-{i}" for i in range(sized(100, 400))]
    produced = asyncio.run(
        produce(stack.api_url, (SITE_ID, INGEST_KEY), people, per_person=50, v2_share=1.0)
    )
    assert produced.total == 50 * len(people)
    stack.start_worker(concurrency=2)
    wait_until(
        lambda: len(stack.received()) >= produced.total,
        timeout_s=240,
        interval_s=1,
        what=f"all {produced.total} ops",
    )
    got = received_by_person(stack.received())
    assert got == dict(produced.accepted)  # each once, in per-person order
    statuses = Counter(r["status"] for r in stack.requests())
    assert statuses[503] > 0.2 * sum(statuses.values())
    assert stack.redis.client().xlen(DLQ) == 0


def test_sigterm_mid_drain_exits_in_grace_and_leaves_nothing_leased(
    stack_with: Callable[..., Stack],
) -> None:
    """SIGTERM while busy: the worker exits within its grace period, shards released."""
    grace_s = 10
    # 24 KB requests, each slowed to 1.5 s, make the ~400 KB backlog many sends: with 500 KB
    # ones, two sends could drain it all before the SIGTERM landed (seen on a loaded machine).
    stack = stack_with(
        shutdown_grace_s=grace_s,
        upstream_timeout_s=5,
        shards=8,
        max_op_bytes=4096,
        max_batch_bytes=24_000,
    )
    _faults(stack, latency_ms=1500)
    people = [f"g-{i}" for i in range(200)]
    produced = asyncio.run(produce(stack.api_url, (SITE_ID, INGEST_KEY), people, per_person=10))
    worker = stack.start_worker(concurrency=2)
    redis = stack.redis.client()

    def leased() -> list[int]:
        return [
            s for s in range(8) if redis.exists(keys.shard_keys("default", s, Lane.TRACK).lease)
        ]

    # A drain may hold several shards (packing across shards); two drains are running.
    wait_until(lambda: len(leased()) >= 2, timeout_s=60, what="two drains running")
    started = time.monotonic()
    worker.popen.send_signal(signal.SIGTERM)
    try:
        worker.popen.wait(grace_s + 5)
    except subprocess.TimeoutExpired:
        worker.dump_stacks()  # where it hung, for the log below
        raise AssertionError(f"no exit in grace:\n{worker.log()[-8000:]}") from None
    assert time.monotonic() - started <= grace_s
    assert leased() == []
    assert len(stack.received()) < produced.total, "the drain finished before the SIGTERM"
    _faults(stack, latency_ms=0)  # the stop is tested; the rest drains at full speed
    stack.start_worker(concurrency=2)
    wait_until(
        lambda: len(stack.received()) >= produced.total,
        timeout_s=120,
        what="the rest after restart",
    )
    got = received_by_person(stack.received())
    # A graceful stop finishes or releases its batch: nothing lost and nothing repeated.
    assert got == dict(produced.accepted)


def test_job_that_kills_its_worker_is_quarantined_as_crash_loop(
    stack_with: Callable[..., Stack],
) -> None:
    """SIGKILL the worker whenever the bomb is in flight: sends are halved until the bomb
    goes alone; after crash_limit lone tries it is dead-lettered as crash_loop, and every
    other job is delivered."""
    stack = stack_with(shards=4, upstream_timeout_s=120, shutdown_grace_s=150, crash_limit=3)
    _faults(stack, hang_s=120)
    people = [f"h-{i}" for i in range(40)]
    produced = asyncio.run(produce(stack.api_url, (SITE_ID, INGEST_KEY), people, per_person=5))
    _post_batch(stack, _ops("bomb", 1, {0: "hang"}))
    redis = stack.redis.client()
    kills = 0

    def bomb_sends() -> list[int]:
        """The sandbox request number of every send that carried the bomb."""
        return [r["seq"] for r in stack.received() if r["op"]["identifiers"] == {"id": "bomb"}]

    worker = stack.start_worker(concurrency=2)
    while True:

        def bomb_sent_again_or_quarantined(k: int = kills) -> bool:
            return len(bomb_sends()) > k or redis.xlen(DLQ) > 0

        wait_until(
            bomb_sent_again_or_quarantined,
            timeout_s=90,
            what=f"bomb send #{kills + 1}",
        )
        if redis.xlen(DLQ):
            break
        worker.kill()
        kills += 1
        assert kills <= 12, "the bomb was never quarantined"
        worker = stack.start_worker(concurrency=2)
    [fields] = stream_fields(redis, DLQ)
    assert fields[b"reason"] == b"crash_loop"
    ops_per_send = Counter(r["seq"] for r in stack.received())
    assert [ops_per_send[seq] for seq in bomb_sends()][-3:] == [1, 1, 1]  # alone, 3 times
    wait_until(
        lambda: (
            {(p, s) for p, s in (seq_of(r["op"]) for r in stack.received()) if p != "bomb"}
            >= {(p, s) for p, seqs in produced.accepted.items() for s in seqs}
        ),
        timeout_s=120,
        what="every other job",
    )
