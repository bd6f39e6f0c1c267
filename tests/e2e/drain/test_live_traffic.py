"""Steady live traffic, real processes: requests carry what waits in the whole workspace."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import pytest

from tests.support.live import steady
from tests.support.load import received_by_person
from tests.support.processes import wait_until
from tests.support.scale import sized
from tests.support.stack import INGEST_KEY, SITE_ID, Stack

LINGER_S = 0.2
DURATION_S = sized(5, 10)


@pytest.mark.load
def test_650_ops_per_s_leave_packed_across_shards_exactly_once_in_order(
    make_stack: Callable[..., Stack],
) -> None:
    """~650 ops/s of mixed v1/v2 traffic for 325 people (5 s; 10 s in the soak), 32 shards,
    linger 200 ms: every
    job once, in per-person order, no body over the limit, and requests packed across
    shards (a stall guard at a tenth of ``rate x linger``, at the rate the producer
    achieved). `bench/run --only live` measures ops per request against the ideal.
    """
    stack = make_stack(shards=32, linger_ms=int(LINGER_S * 1000))
    stack.start_api()
    stack.start_sweeper()
    stack.start_worker(concurrency=2)
    people = [f"live-{i}" for i in range(325)]
    started = time.monotonic()
    produced = asyncio.run(
        steady(stack.api_url, (SITE_ID, INGEST_KEY), people, rate_per_s=650, duration_s=DURATION_S)
    )
    rate_per_s = produced.total / (time.monotonic() - started)
    assert produced.total >= 0.1 * 650 * DURATION_S, produced.total  # a stall guard on ingest
    wait_until(
        lambda: len(stack.received()) >= produced.total,
        timeout_s=120,
        interval_s=0.5,
        what="every job at the sandbox",
    )
    got = received_by_person(stack.received())
    dupes = Counter((p, s) for p, seqs in got.items() for s in seqs)
    assert [k for k, n in dupes.items() if n > 1] == []
    assert got == dict(produced.accepted)  # exactly once, in each person's order
    requests = [r for r in stack.requests() if r["path"] == "/api/v2/batch"]
    assert max(r["body_bytes"] for r in requests) <= 500_000
    mean_ops = sum(r["op_count"] for r in requests) / len(requests)
    ideal = rate_per_s * LINGER_S
    print(
        f"{produced.total} ops at {rate_per_s:.0f}/s in {len(requests)} requests: "
        f"{mean_ops:.1f} ops/request (ideal {ideal:.0f})"
    )
    assert mean_ops >= 0.1 * ideal, (mean_ops, rate_per_s)
