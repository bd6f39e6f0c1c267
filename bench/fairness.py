"""Live traffic first: a backfill drains while 5 live events a second arrive
(tests/support/fairness.py, real processes). For each case, the backfill is first drained
alone, then again with live traffic, in the same run:

* live p50 and p99 (accept -> upstream), against the budget linger + 1,000 ms;
* the backfill's rate with live traffic against its rate alone (goal >= 0.8x).

Cases: (a) the backfill in another workspace; (b) the backfill marked bulk in the live
traffic's own workspace.
"""

from __future__ import annotations

from pathlib import Path

from bench.figures import Figure
from service.jobs import Traffic
from tests.support import fairness
from tests.support.stack import Stack

CASES = (
    ("another workspace", "bulk", Traffic.LIVE),
    ("marked bulk, same workspace", "default", Traffic.BULK),
)
BUDGET_MS = fairness.LINGER_MS + 1000


def run(tmp: Path, *, quick: bool) -> list[Figure]:
    ops = 100_000 if quick else 300_000
    figures: list[Figure] = []
    for n, (case, workspace, traffic) in enumerate(CASES):
        stack = Stack(tmp / f"fairness-{n}", **fairness.settings())
        try:
            fairness.start(stack)
            alone = fairness.drain(stack, workspace, traffic, ops=ops, live=False)
            shared = fairness.drain(stack, workspace, traffic, ops=ops, live=True)
        finally:
            stack.close()
        probes = len(shared.latencies_ms)
        note = (
            f"{ops:,}-op backfill, {probes} live probes, 1 worker x 2 processes, "
            f"50 ms upstream, linger {fairness.LINGER_MS} ms"
        )
        figures += [
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
    return figures
