"""Pipelines lane faults with real processes: strict-mode 400 bisection, a 401 that pauses
only the Pipelines lane, and 30% random 5xx."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from service import keys
from service.jobs import Lane
from tests.support.load import produce
from tests.support.pipelines_load import produce_pipelines, seq_of_call
from tests.support.processes import wait_until
from tests.support.scale import sized
from tests.support.stack import ADMIN_KEY, CDP_KEY, INGEST_KEY, SITE_ID, Stack

DLQ = keys.dead_letters("default")


def _post(stack: Stack, calls: list[dict[str, Any]]) -> None:
    r = httpx.post(
        f"{stack.api_url}/v1/batch",
        json={"batch": calls},
        auth=(INGEST_KEY, ""),
        timeout=30,
    )
    assert r.status_code == 200, r.text


def _cdp_seqs(stack: Stack) -> dict[str, list[int]]:
    got: dict[str, list[int]] = {}
    for record in stack.received():
        if record["kind"] == "cdp":
            person, seq = seq_of_call(record["op"])
            got.setdefault(person, []).append(seq)
    return got


def test_strict_400_naming_nothing_dead_letters_exactly_the_two_bad_calls(
    stack_with: Callable[..., Stack],
) -> None:
    """A batch of 1,000 with 2 poison calls: 400 names nothing; bisection finds the 2."""
    stack = stack_with(shards=1)
    poison = {137, 802}
    calls = [
        {
            "type": "track",
            "userId": "p",
            "event": "e",
            "properties": {"seq": seq, **({"sandbox_poison": "400"} if seq in poison else {})},
        }
        for seq in range(1000)
    ]
    _post(stack, calls)
    stack.start_worker(concurrency=1, pool="solo")
    wait_until(lambda: len(_cdp_seqs(stack).get("p", [])) >= 998, timeout_s=90, what="998")
    assert _cdp_seqs(stack)["p"] == [s for s in range(1000) if s not in poison]
    first = stack.requests()[0]
    assert (first["path"], first["op_count"], first["status"]) == ("/v1/batch", 1000, 400)
    with httpx.Client(
        base_url=f"{stack.api_url}/admin/v1/workspaces/default/dead-letters",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ) as admin:
        dead = admin.get("", params={"person": "p"}).json()["dead_letters"]
        assert sorted(d["payload"]["properties"]["seq"] for d in dead) == sorted(poison)
        assert {(d["lane"], d["kind"], d["reason"], d["status"]) for d in dead} == {
            ("pipelines", "cdp", "invalid", 400)
        }
        assert all("refused" in d["message"] for d in dead)  # Customer.io's message, kept
        # Replay puts them back on the Pipelines lane, unchanged; refused again, they return
        assert admin.post("/replay", json={"all": True}).json()["replayed"] == 2
        wait_until(
            lambda: len(admin.get("").json()["dead_letters"]) == 2,
            timeout_s=60,
            what="the replayed calls back in the DLQ",
        )
        again = admin.get("").json()["dead_letters"]
        assert {d["id"] for d in again}.isdisjoint({d["id"] for d in dead})
        payloads = sorted(d["payload"]["messageId"] for d in again)
        assert payloads == sorted(d["payload"]["messageId"] for d in dead)
        assert admin.post("/purge", json={"all": True}).json()["purged"] == 2
        assert admin.get("").json()["dead_letters"] == []


def test_401_pauses_only_the_pipelines_lane(stack_with: Callable[..., Stack]) -> None:
    """A refused write key pauses Pipelines (jobs kept); Track keeps flowing; fixed → resumes."""
    stack = stack_with(setup_pause_ms=1000)
    with stack.sandbox_client() as sandbox:
        sandbox.post(
            "/_sandbox/credentials", json={"write_key": CDP_KEY, "active": False}
        ).raise_for_status()
    people = [f"q-{i}" for i in range(40)]
    cdp = asyncio.run(produce_pipelines(stack.api_url, INGEST_KEY, people, per_person=5))
    stack.start_worker(concurrency=2)
    redis = stack.redis.client()
    wait_until(
        lambda: redis.exists(keys.pause("default", Lane.PIPELINES)), timeout_s=60, what="pause"
    )
    # While the Pipelines lane is paused, Track jobs are accepted and delivered
    track = asyncio.run(produce(stack.api_url, (SITE_ID, INGEST_KEY), people, per_person=5))
    wait_until(
        lambda: sum(r["kind"] == "v2" for r in stack.received()) >= track.total,
        timeout_s=60,
        what="Track jobs while Pipelines is paused",
    )
    assert not redis.exists(keys.pause("default", Lane.TRACK))
    # The pause lasts setup_pause_ms; each probe after it is refused and pauses again, so
    # on a slow machine the key may be between two pauses when Track is through.
    wait_until(
        lambda: redis.get(keys.pause("default", Lane.PIPELINES)) == b"setup:401",
        timeout_s=30,
        what="the Pipelines lane paused for setup:401",
    )
    assert _cdp_seqs(stack) == {}
    assert redis.xlen(DLQ) == 0  # kept, not dead-lettered
    # Once the key is fixed, the next probe after the pause delivers everything, in order
    with stack.sandbox_client() as sandbox:
        sandbox.post(
            "/_sandbox/credentials", json={"write_key": CDP_KEY, "active": True}
        ).raise_for_status()
    wait_until(
        lambda: sum(map(len, _cdp_seqs(stack).values())) >= cdp.total,
        timeout_s=60,
        what="Pipelines delivery after the fix",
    )
    assert _cdp_seqs(stack) == dict(cdp.accepted)
    assert redis.xlen(DLQ) == 0


@pytest.mark.load
def test_30_percent_5xx_loses_nothing_and_keeps_order(stack_with: Callable[..., Stack]) -> None:
    """Pipelines calls, 30% of requests answered 5xx: all delivered once, in order.

    The short form's 16 KB requests make its 5,000 calls dozens of sends, so the faults land
    all through the drain, as the soak's 20,000 calls in full requests do."""
    stack = stack_with(
        retry_base_ms=20,
        retry_cap_ms=500,
        cdp_max_call_bytes=4096,
        cdp_max_batch_bytes=sized(16_000, 500_000),
    )
    with stack.sandbox_client() as sandbox:
        sandbox.post(
            "/_sandbox/faults", json={"error_rate": 0.3, "error_status": 502, "seed": 5}
        ).raise_for_status()
    people = [f"f-{i}" for i in range(sized(100, 400))]
    cdp = asyncio.run(
        produce_pipelines(stack.api_url, INGEST_KEY, people, per_person=50, batch_calls=50)
    )
    assert cdp.total == 50 * len(people)
    stack.start_worker(concurrency=2)
    wait_until(
        lambda: sum(map(len, _cdp_seqs(stack).values())) >= cdp.total,
        timeout_s=240,
        interval_s=1,
        what=f"all {cdp.total} calls",
    )
    assert _cdp_seqs(stack) == dict(cdp.accepted)  # each once, in per-person order
    statuses = Counter(r["status"] for r in stack.requests())
    assert statuses[502] > 0.2 * sum(statuses.values())
    assert stack.redis.client().xlen(DLQ) == 0
