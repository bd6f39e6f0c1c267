"""End to end with real processes: Pipelines and Track jobs for the same people, both lanes.

Each lane keeps its own streams, so order is checked per person per lane (docs/pipelines.md,
"Lanes, streams and order": order across lanes is not promised).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from ulid import ULID

from tests.support.load import Produced, produce, seq_of
from tests.support.pipelines_load import (
    PRODUCER_TIMESTAMP,
    PipelinesProduced,
    iso_seconds,
    produce_pipelines,
    seq_of_call,
)
from tests.support.processes import wait_until
from tests.support.scale import sized
from tests.support.stack import INGEST_KEY, SITE_ID, Stack

#: Clock slack between this process, the api and the sandbox (same host) plus rounding.
SLACK_S = 1.0


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack()


def in_order(
    records: list[dict[str, Any]], key: Callable[[dict[str, Any]], tuple[str, int]]
) -> dict[str, list[int]]:
    got: dict[str, list[int]] = defaultdict(list)
    for record in records:
        person, seq = key(record["op"])
        got[person].append(seq)
    return dict(got)


def check_once_in_order(got: dict[str, list[int]], accepted: dict[str, list[int]]) -> None:
    dupes = Counter((p, s) for p, seqs in got.items() for s in seqs)
    assert [k for k, n in dupes.items() if n > 1] == []
    assert got == dict(accepted)  # every job, and each person's in the order accepted


@pytest.mark.load
def test_mixed_jobs_through_both_lanes(stack: Stack) -> None:
    """Pipelines + Track jobs (3,150; 10,500 in the soak): once each, in order, stamped, within
    limits."""
    # Given a backlog in both lanes, built while no worker runs
    stack.start_api()
    stack.start_sweeper()
    people = [f"person-{i}" for i in range(sized(150, 500))]

    async def both() -> tuple[Produced, PipelinesProduced]:
        return await asyncio.gather(
            produce(stack.api_url, (SITE_ID, INGEST_KEY), people, per_person=10),
            produce_pipelines(stack.api_url, INGEST_KEY, people, per_person=11),
        )

    started_s = time.time()
    track, cdp = asyncio.run(both())
    finished_s = time.time()
    assert (track.total, cdp.total) == (len(people) * 10, len(people) * 11)
    # When two worker processes drain it
    stack.start_worker(concurrency=2)
    total = track.total + cdp.total
    wait_until(
        lambda: len(stack.received()) >= total, timeout_s=240, interval_s=0.5, what="all jobs"
    )
    records = stack.received()
    cdp_records = [r for r in records if r["kind"] == "cdp"]
    track_records = [r for r in records if r["kind"] == "v2"]
    assert len(cdp_records) + len(track_records) == len(records) == total
    # Then each job arrived exactly once, in per-person order within its lane
    check_once_in_order(in_order(cdp_records, seq_of_call), cdp.accepted)
    check_once_in_order(in_order(track_records, seq_of), track.accepted)
    # And every Pipelines call has a messageId (the producer's kept) and a timestamp: the
    # producer's, else its accept time
    ids = [r["op"]["messageId"] for r in cdp_records]
    assert all(ids) and len(set(ids)) == len(ids)
    for record in cdp_records:
        call = record["op"]
        key = seq_of_call(call)
        if key in cdp.own_ids:
            assert call["messageId"] == cdp.own_ids[key]
        if key in cdp.own_timestamps:
            assert call["timestamp"] == PRODUCER_TIMESTAMP
        else:
            sent_s, answered_s = cdp.windows[key]
            assert sent_s - SLACK_S <= iso_seconds(call["timestamp"]) <= answered_s + SLACK_S
    # And Track identifies and events carry their accept time (events: their ULID's time)
    for record in track_records:
        op = record["op"]
        if op["action"] == "event":
            ulid_s = ULID.from_str(op["id"]).timestamp
            assert abs(op["timestamp"] - ulid_s) <= SLACK_S
        if op["action"] in ("identify", "event"):
            assert started_s - SLACK_S <= op["timestamp"] <= finished_s + SLACK_S
    # And no request or call went over Customer.io's limits
    requests = stack.requests()
    cdp_requests = [r for r in requests if r["path"] == "/v1/batch"]
    assert cdp_requests and all(r["status"] == 200 and r["strict"] for r in cdp_requests)
    assert max(r["body_bytes"] for r in cdp_requests) <= 500_000
    assert max(r["body_bytes"] for r in requests if r["path"] == "/api/v2/batch") <= 500_000
    assert max(len(orjson.dumps(r["op"])) for r in cdp_records) <= 32_000
    # And a backlog leaves in full batches: ~500-byte calls, so >100 calls per body on average
    assert sum(r["op_count"] for r in cdp_requests) / len(cdp_requests) > 100
