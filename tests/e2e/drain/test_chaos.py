"""The chaos run (bench/chaos.py) as a test: nothing acknowledged is lost or reordered.

The short run (6,000 ops, every fault kind at least once) is part of the normal suite;
``scripts/chaos`` runs the full 100,000-op run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import SCRIPT, ChaosConfig, run

pytestmark = [pytest.mark.chaos]

SHORT = ChaosConfig(
    ops=6000, people=300, rate_per_s=300, fault_interval_s=2.0, settle_timeout_s=180
)


@pytest.mark.timeout(300)
def test_chaos_run_loses_nothing_and_keeps_order(tmp_path: Path) -> None:
    """Worker and Redis SIGKILLs, 429/5xx/timeouts and poison ops: lost = 0, order kept."""
    report = run(SHORT, tmp_path)
    print(report.render())
    assert report.lost == [], report.render()
    assert report.order_violations == [], report.render()
    assert report.rejected == [], report.render()
    # Every kind of fault was injected, and poison ended in the DLQ, never delivered
    assert set(SCRIPT) <= set(report.faults), report.faults
    assert report.poison > 0
    assert report.poison_dead_lettered == report.poison
    assert report.poison_delivered == 0
    assert report.accepted == report.planned
    assert report.delivered + sum(report.dead_lettered.values()) >= report.accepted
