"""Live traffic first, real processes (tests/support/fairness.py): a backfill drains while
live events keep flowing. The suite checks behaviour and gross stalls only: every probe
delivered, the backfill drained, and no probe waits anywhere near the stall guard.
`bench/run --only fairness` measures the figures (live p50/p99, the backfill's rate with
live traffic against its rate alone). Shapes (issue 27): (a) another workspace's backfill,
(b) bulk-marked in the same workspace, (1) piled up while no worker ran, (4) ten
backfilling workspaces, (6) as (1) with a worker SIGKILLed midway.

The backfill must last long enough for at least 5 probes at 5/s; ``CIOQ_TEST_BACKFILL_OPS``
scales it (default 50,000: a few seconds quiet, longer under coverage and the suite's load).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
import pytest

from service.jobs import Traffic
from tests.support import fairness
from tests.support.stack import SITE_ID, Stack

pytestmark = [pytest.mark.timeout(900)]

BACKFILL_OPS = int(os.environ.get("CIOQ_TEST_BACKFILL_OPS", "50000"))
#: Shape 1's backfill, ingested through the API while no worker runs: big enough that
#: its leftover triggers held live events past the stall guard before issue 27's fix
#: (p99 8.8 s on a loaded machine), and drained in about 10 s.
OUTAGE_OPS = int(os.environ.get("CIOQ_TEST_OUTAGE_OPS", "60000"))
OUTAGE_PROBES = 25
#: An order of magnitude above what bench/ reports for live p99 (about 500 ms): only a
#: live event stuck behind the whole backfill (11 s before the two-queue design) trips it.
STALL_GUARD_MS = 5_000


def _check(
    stack: Stack,
    workspace: str | tuple[str, ...],
    traffic: Traffic,
    *,
    ops: int = BACKFILL_OPS,
) -> None:
    shared = fairness.drain(stack, workspace, traffic, ops=ops, live=True)
    lat = shared.latencies_ms
    print(
        f"backfill {ops:,} ops per workspace with live: {shared.rate_ops_per_s:,.0f} ops/s "
        f"({shared.took_s:.0f} s); live probes {len(lat)}: p50 {shared.p50_ms:.0f} ms, "
        f"p99 {shared.p99_ms:.0f} ms"
    )
    assert len(lat) >= 5, "the backfill drained before the probes could measure anything"
    assert shared.p99_ms <= STALL_GUARD_MS, (shared.p50_ms, shared.p99_ms)


def test_a_backfill_in_another_workspace_does_not_hold_back_live_events(
    make_stack: Callable[..., Stack],
) -> None:
    """(a) Workspace `bulk` drains an unmarked backfill; `default` sends 5 live events/s."""
    _check(fairness.start(make_stack(**fairness.settings())), "bulk", Traffic.LIVE)


def test_a_backfill_marked_bulk_does_not_hold_back_its_own_workspaces_live_events(
    make_stack: Callable[..., Stack],
) -> None:
    """(b) The same within one workspace: the backfill is bulk, the probes are live."""
    _check(fairness.start(make_stack(**fairness.settings())), "default", Traffic.BULK)


def test_ten_backfilling_workspaces_do_not_hold_back_an_eleventh_ones_live_events(
    make_stack: Callable[..., Stack],
) -> None:
    """(4) Ten workspaces each drain a backlog (a tenth of the usual backfill each);
    `default`, an eleventh, sends 5 live events/s."""
    stack = fairness.start(make_stack(**fairness.settings()), backfills=10)
    per_workspace = BACKFILL_OPS // 10
    _check(stack, fairness.backfill_workspaces(10), Traffic.LIVE, ops=per_workspace)


@pytest.mark.parametrize("kill_one", [False, True], ids=["shape-1", "shape-6-worker-killed"])
def test_live_events_after_an_outage_do_not_wait_behind_the_backlog_it_left(
    make_stack: Callable[..., Stack], kill_one: bool
) -> None:
    """(1) No worker runs while workspace `bulk` ingests a backfill through the API; then a
    worker and the sweeper start, and 2 s later `default` sends 5 live events/s. (6) The
    same with two workers, one SIGKILLed a third of the way through (its leases expire
    while the live events flow)."""
    stack = fairness.start(make_stack(**fairness.settings()), sweeper=False)
    outage = fairness.after_outage(stack, ops=OUTAGE_OPS, probes=OUTAGE_PROBES, kill_one=kill_one)
    drained = outage.drained
    print(
        f"outage backfill {OUTAGE_OPS:,} ops; trigger queues at restart: live "
        f"{outage.live_queue}, bulk {outage.bulk_queue}; drained in {drained.took_s:.0f} s; "
        f"live p50 {drained.p50_ms:.0f} ms, p99 {drained.p99_ms:.0f} ms"
    )
    fairness.probes_once_in_order(stack.received_from(SITE_ID), outage.accepted)
    assert len(outage.accepted) == OUTAGE_PROBES
    assert drained.p99_ms <= STALL_GUARD_MS, (drained.p50_ms, drained.p99_ms)


def test_received_from_filters_by_site(make_stack: Callable[..., Stack]) -> None:
    """The harness's own check: a site filter sees only that site's ops."""
    stack = make_stack(sites={fairness.BULK_SITE: fairness.BULK_KEY})
    op = {"type": "person", "action": "identify", "identifiers": {"id": "x"}}
    for site, key in ((SITE_ID, "e2e-api-key"), (fairness.BULK_SITE, fairness.BULK_KEY)):
        r = httpx.post(f"{stack.sandbox_url}/api/v2/batch", json={"batch": [op]}, auth=(site, key))
        assert r.status_code == 200, r.text
    assert [r["site_id"] for r in stack.received_from(fairness.BULK_SITE)] == [fairness.BULK_SITE]
