"""The index of delivered jobs on a real Redis Cluster: one script call per request, its
keys all in the workspace's slot, found again by a late failure."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from service import keys
from service.jobs import Lane
from service.lanes.track.jobs import v2_job
from service.store.sent_index import find_sent, record_sent
from service.store.shards import Entry
from tests.support.cluster import Cluster
from tests.support.late import event, identify


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    nodes = Cluster(tmp_path / "cluster", size=3, replicas=0, appendonly=False)
    yield nodes
    nodes.stop()


def test_a_request_is_indexed_and_found_on_a_cluster(cluster: Cluster) -> None:
    client = cluster.client()
    assert isinstance(client, redis.RedisCluster)
    shard = keys.shard_keys("default", 3, Lane.TRACK)
    ops = [identify(n) for n in range(200)] + [event(n) for n in range(200)]
    entries = [
        Entry(f"{1_700_000_000_000 + i}-0".encode(), (j := v2_job(op)).kind, j.payload, shard, "")
        for i, op in enumerate(ops)
    ]
    now_ms = int(time.time() * 1000)
    try:
        for delivered_ms in (now_ms, now_ms + 1):  # delivered twice: two copies each
            indexed = record_sent(
                client, "default", "track", entries, delivered_ms, window_s=60, per_person=5
            )
            assert indexed == len(entries)
        person = keys.sent_person("default", "id", "p7")
        assert client.zcard(person) == 4  # an identify and an event, each delivered twice
        assert 0 < client.pttl(person) <= 60_000
        activity = {
            "type": "failed_event",
            "data": {"event_id": ops[250]["id"]},
            "timestamp": now_ms // 1000,
        }
        found = find_sent(client, "default", activity)
        assert found is not None and found.entry == f"{shard.tag}:1700000000250-0"
        # Every copy is on the primary serving the workspace's slot, none elsewhere.
        owner = client.get_node_from_key(person)
        holding = [
            node.name
            for node in client.get_primaries()
            if client.execute_command("DBSIZE", target_nodes=node)
        ]
        assert holding == [owner.name]
    finally:
        client.close()
