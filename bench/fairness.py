"""Live traffic first: a backfill drains while 5 live events a second arrive
(tests/support/fairness.py, real processes). For each case, the backfill is first drained
alone, then again with live traffic, in the same run:

* live p50 and p99 (accept -> upstream), against the budget linger + 1,000 ms;
* the backfill's rate with live traffic against its rate alone (goal >= 0.8x).

Cases: (a) the backfill in another workspace; (b) the backfill marked bulk in the live
traffic's own workspace; (1) the backfill ingested through the API while no worker ran,
then a worker and the sweeper start and 2 s later 100 live events arrive (issue 27's
shape 1); (4) the backfill split over ten workspaces, live traffic in an eleventh; (6) as
(1) with two workers, one SIGKILLed a third of the way through; (5) as (1) on a Redis
Cluster of 3 primaries; (7) a Pipelines backfill in the default workspace while its Track
live events (5/s) and App sends (2/s) flow: the Track p99, and every App send answered
by Customer.io (200) within `CIOQ_APP_SEND_WAIT_MS` (3 s), its slowest answer reported.
"""

from __future__ import annotations

from pathlib import Path

from bench.figures import Figure
from service.jobs import Traffic
from tests.support import fairness, fairness_lanes, fairness_outage
from tests.support.cluster import Cluster
from tests.support.stack import Stack

CASES: tuple[tuple[str, str | tuple[str, ...], Traffic], ...] = (
    ("another workspace", "bulk", Traffic.LIVE),
    ("marked bulk, same workspace", "default", Traffic.BULK),
    # The backfill split over ten workspaces (300,000 ops: 30,000 each).
    ("4: ten workspaces, live in an eleventh", fairness.backfill_workspaces(10), Traffic.LIVE),
)
BUDGET_MS = fairness.LINGER_MS + 1000
#: CIOQ_APP_SEND_WAIT_MS's default: past it the producer gets a 202, not the answer.
APP_SEND_WAIT_MS = 3000


OUTAGE_PROBES = 100
#: (case, a worker SIGKILLed midway, the store on a Redis Cluster)
OUTAGES = (
    ("1: after an outage", False, False),
    ("6: after an outage, a worker killed", True, False),
    ("5: after an outage, on a Redis Cluster", False, True),
)
APP_SENDS = 40


def _outage(
    tmp: Path, *, ops: int, probes: int, kill_one: bool, on_cluster: bool
) -> fairness_outage.Outage:
    cluster = Cluster(tmp / "cluster") if on_cluster else None
    stack = Stack(tmp, cluster=cluster, **fairness.settings())
    try:
        fairness.start(stack, sweeper=False)
        return fairness_outage.after_outage(stack, ops=ops, probes=probes, kill_one=kill_one)
    finally:
        stack.close()
        if cluster is not None:
            cluster.stop()


def _lanes(tmp: Path, *, ops: int, probes: int, sends: int) -> fairness_lanes.Lanes:
    stack = Stack(tmp, **fairness.settings())
    try:
        fairness.start(stack)
        return fairness_lanes.pipelines_backfill(stack, ops=ops, probes=probes, sends=sends)
    finally:
        stack.close()


def run(tmp: Path, *, quick: bool) -> list[Figure]:
    ops = 100_000 if quick else 300_000
    figures: list[Figure] = []
    for n, (case, kill_one, on_cluster) in enumerate(OUTAGES):
        alone_dir, shared_dir = tmp / f"outage-{n}-alone", tmp / f"outage-{n}"
        by_itself = _outage(alone_dir, ops=ops, probes=0, kill_one=kill_one, on_cluster=on_cluster)
        outage = _outage(
            shared_dir, ops=ops, probes=OUTAGE_PROBES, kill_one=kill_one, on_cluster=on_cluster
        )
        note = (
            f"{ops:,}-op backfill through the api while no worker ran (then {outage.live_queue} "
            f"live and {outage.bulk_queue} bulk triggers waited), {OUTAGE_PROBES} live "
            f"probes at 5/s from 2 s after the worker, 50 ms upstream, linger "
            f"{fairness.LINGER_MS} ms"
        )
        figures += _figures(case, by_itself.drained, outage.drained, note)
    for n, (case, workspace, traffic) in enumerate(CASES):
        backfills = 1 if isinstance(workspace, str) else len(workspace)
        each = ops // backfills
        stack = Stack(tmp / f"fairness-{n}", **fairness.settings())
        try:
            fairness.start(stack, backfills=backfills)
            alone = fairness.drain(stack, workspace, traffic, ops=each, live=False)
            shared = fairness.drain(stack, workspace, traffic, ops=each, live=True)
        finally:
            stack.close()
        note = (
            f"{ops:,}-op backfill, {len(shared.latencies_ms)} live probes, 1 worker x 2 "
            f"processes, 50 ms upstream, linger {fairness.LINGER_MS} ms"
        )
        figures += _figures(case, alone, shared, note)
    figures += _pipelines(tmp, ops=ops)
    return figures


def _pipelines(tmp: Path, *, ops: int) -> list[Figure]:
    """Shape 7: a Pipelines backfill against Track live events and App sends."""
    alone = _lanes(tmp / "lanes-alone", ops=ops, probes=0, sends=0)
    shared = _lanes(tmp / "lanes", ops=ops, probes=OUTAGE_PROBES, sends=APP_SENDS)
    answered = [wait_s for status, wait_s in shared.app_answers if status == 200]
    slowest_ms = max(answered, default=float("nan")) * 1000
    note = (
        f"{ops:,}-op Pipelines backfill in the live traffic's workspace, {OUTAGE_PROBES} "
        f"Track probes at 5/s, {APP_SENDS} App sends at {fairness_lanes.SENDS_PER_S}/s "
        f"({len(answered)} answered 200), 50 ms upstream, linger {fairness.LINGER_MS} ms"
    )
    case = "7: Pipelines backfill, Track and App traffic"
    return [
        *_figures(case, alone.drained, shared.drained, note),
        Figure(
            f"fairness ({case}): slowest App send answer",
            slowest_ms,
            "ms",
            "the send wait",
            APP_SEND_WAIT_MS,
            "every send 200 within the wait",
            len(answered) == APP_SENDS and slowest_ms <= APP_SEND_WAIT_MS,
            note,
            invert=True,
        ),
    ]


def _figures(
    case: str, alone: fairness.Drained, shared: fairness.Drained, note: str
) -> list[Figure]:
    probes = len(shared.latencies_ms)
    return [
        Figure(
            f"fairness ({case}): live p99",
            shared.p99_ms,
            "ms",
            "budget linger + 1,000",
            BUDGET_MS,
            "<= budget",
            probes >= 10 and shared.p99_ms <= BUDGET_MS,
            f"p50 {shared.p50_ms:,.0f} ms; {note}",
            invert=True,
        ),
        Figure(
            f"fairness ({case}): backfill with live traffic",
            shared.rate_ops_per_s,
            "ops/s",
            "backfill alone",
            alone.rate_ops_per_s,
            ">= 0.8x",
            shared.rate_ops_per_s >= 0.8 * alone.rate_ops_per_s,
            note,
        ),
    ]
