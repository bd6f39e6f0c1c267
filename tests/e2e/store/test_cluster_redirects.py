"""A part sent to a slot that moved mid-send follows the redirect (a real 3-primary cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from service import keys
from service.config import Settings
from service.jobs import Lane
from service.store.connections import connect_async
from service.store.slots import Part, SlotWriter
from tests.support.cluster import Cluster, reshard


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    nodes = Cluster(tmp_path / "cluster")
    yield nodes
    nodes.stop()


@pytest.mark.xdist_group("cluster")
def test_a_part_sent_to_a_slot_that_moved_follows_the_redirect(cluster: Cluster) -> None:
    """A writer whose topology predates a reshard gets MOVED, re-reads, and stores the part."""
    shard = keys.shard_keys("default", 0, Lane.TRACK)
    source = cluster.node_of(shard.stream)
    target = next(n for n in cluster.primaries() if n is not source)
    settings = Settings(redis_url=cluster.url, redis_cluster=True, broker_url="redis://x:1/0")
    part = Part([shard.stream, shard.trigger], [1000, 60_000, 0, "", 1, b"o", b"{}"])

    async def write_before_and_after() -> list[object]:
        client = connect_async(settings.redis)
        writer = SlotWriter(client, "enqueue", seed_url=cluster.url)
        try:
            first = await writer.run([part])
            slots = sum(
                end - start + 1
                for start, end, (_, port, *_), *_ in source.client().cluster("slots")
                if port == source.port
            )
            await asyncio.to_thread(reshard, cluster, source, target, slots)
            return [*first, *await writer.run([part])]
        finally:
            await writer.aclose()
            await client.aclose()

    results = asyncio.run(write_before_and_after())
    assert [r[0] for r in results] == [1, 1]  # type: ignore[index]
    assert cluster.node_of(shard.stream) is target
    assert target.client().xlen(shard.stream) == 2
