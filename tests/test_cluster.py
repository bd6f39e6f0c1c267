"""cioq on a real 6-node Redis Cluster (3 primaries, 3 replicas) on loopback.

The store is the cluster (``CIOQ_REDIS_CLUSTER=true``), the broker the stack's own
standalone Redis. The same guarantees as on one Redis: every job once, in per-person
order, in batches within the limits.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster
from tests.support.load import Produced, produce, received_by_person
from tests.support.processes import wait_until
from tests.support.stack import INGEST_KEY, SITE_ID, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("cluster")]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    nodes = Cluster(tmp_path / "cluster")
    yield nodes
    nodes.stop()


def assert_exactly_once_in_order(stack: Stack, produced: Produced) -> None:
    got = received_by_person(stack.received())
    dupes = Counter((p, s) for p, seqs in got.items() for s in seqs)
    assert [k for k, n in dupes.items() if n > 1] == []
    assert {p: got.get(p, []) for p in produced.accepted} == dict(produced.accepted)


def test_ten_thousand_jobs_on_a_cluster(make_stack: Callable[..., Stack], cluster: Cluster) -> None:
    """≥10,000 mixed v1/v2 jobs for 500 people through a cluster: once, in order, in limits."""
    stack = make_stack(cluster=cluster, shards=16)
    stack.start_api()
    stack.start_sweeper()
    people = [f"person-{i}" for i in range(500)]
    produced = asyncio.run(produce(stack.api_url, (SITE_ID, INGEST_KEY), people, per_person=20))
    assert produced.total == 10_000
    # The shards' streams really are spread over the three primaries.
    holding = [n.client().dbsize() for n in cluster.primaries()]
    assert len(holding) == 3 and all(holding), holding
    stack.start_worker(concurrency=2)
    wait_until(
        lambda: len(stack.received()) >= produced.total,
        timeout_s=240,
        interval_s=0.5,
        what="all jobs at the sandbox",
    )
    assert_exactly_once_in_order(stack, produced)
    requests = [r for r in stack.requests() if r["path"] == "/api/v2/batch"]
    assert max(r["body_bytes"] for r in requests) <= 500_000
    assert sum(r["op_count"] for r in requests) / len(requests) > 50
