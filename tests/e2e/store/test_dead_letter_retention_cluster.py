"""Dead-letter retention on a real Redis Cluster: the removal script and its counter share
the workspace's slot, so it runs on whichever primary holds the workspace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service import keys
from service.lanes.track.jobs import v2_job
from service.store.dead_letter_retention import LetterRemover
from service.store.dead_letters import DeadLetter
from tests.support.cluster import Cluster

NOW_MS = 1_800_000_000_000
MAX_AGE_S = 60
CUTOFF_MS = NOW_MS - MAX_AGE_S * 1000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    nodes = Cluster(tmp_path / "cluster")
    yield nodes
    nodes.stop()


def test_retention_removes_and_counts_per_workspace_on_a_cluster(cluster: Cluster) -> None:
    client = cluster.client()
    op = {"type": "person", "action": "identify", "identifiers": {"id": "p"}}
    fields: Any = DeadLetter("v2", v2_job(op).payload, "s", "invalid", "invalid").to_fields()
    workspaces = ("alpha", "beta", "gamma")
    for n, ws in enumerate(workspaces):
        for i in range(n + 2):
            client.xadd(keys.dead_letters(ws), fields, id=f"{CUTOFF_MS - 10}-{i}")
        client.xadd(keys.dead_letters(ws), fields, id=f"{CUTOFF_MS}-0")
    assert len({cluster.node_of(keys.dead_letters(ws)).port for ws in workspaces}) > 1
    remover = LetterRemover(client)
    removed = [remover.expire(ws, now_ms=NOW_MS, max_age_s=MAX_AGE_S) for ws in workspaces]
    assert removed == [2, 3, 4]
    assert [remover.expired_total(ws) for ws in workspaces] == [2, 3, 4]
    assert [client.xlen(keys.dead_letters(ws)) for ws in workspaces] == [1, 1, 1]
