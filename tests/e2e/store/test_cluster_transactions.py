"""The api's atomic multi-command writes on a Redis Cluster stay on the api's event loop.

redis-py's asyncio cluster client queues each command of a transaction pipeline by running
it with ``asyncio.run`` in a thread of its own; when the client has its topology to (re)read
(at first use, or after a MOVED), it reads it there, and the node connections it makes
belong to that throwaway loop. The api's next command to such a node then failed with
"attached to a different loop" or "Event loop is closed" (the full cluster crash-point
sweep in ``moved`` mode, 1 run in 2 to 4). So the api writes those records with one script
call each (``outcome_create.lua``, ``manual_pause.lua``), and no coroutine of the api
builds a transaction pipeline (tests/unit/project/test_no_async_transactions.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from service import keys
from service.config import Settings
from service.lanes.app.outcomes import AsyncOutcomes, Outcome, State
from service.store.connections import connect_async
from service.store.workspace_control import WorkspaceControl
from tests.support.cluster import Cluster

pytestmark = [pytest.mark.xdist_group("cluster")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    nodes = Cluster(tmp_path_factory.mktemp("cluster"))
    yield nodes
    nodes.stop()


def _settings(cluster: Cluster) -> Settings:
    # The broker is named only because settings require it with a cluster: nothing here
    # sends a trigger.
    return Settings(
        redis_url=cluster.url,
        redis_cluster=True,
        broker_url="redis://127.0.0.1:1/0",
        redis_timeout_s=2,
    )


@pytest.mark.parametrize("first", ["outcome", "pause"])
def test_a_fresh_cluster_client_writes_then_serves_every_node_from_the_same_loop(
    cluster: Cluster, first: str
) -> None:
    """The write comes first, while the client has yet to read the topology: the case
    that left connections of another loop in its pools."""
    settings = _settings(cluster)

    async def run() -> None:
        client = connect_async(settings.redis)
        assert isinstance(client, AsyncRedisCluster)
        outcomes = AsyncOutcomes(client, settings.app)
        control = WorkspaceControl(client, settings.queue, None)
        try:
            if first == "outcome":
                await outcomes.create("ws-a", Outcome("job-1", State.QUEUED))
            else:
                await control.pause(
                    "ws-a", "app", reason="maintenance", who="ops", duration_ms=60_000
                )
            # Every node, and keys in many slots, on this loop.
            await client.execute_command("PING", target_nodes=AsyncRedisCluster.ALL_NODES)
            for n in range(24):
                await outcomes.create(f"ws-{n}", Outcome(f"job-{n}", State.QUEUED))
                found = await outcomes.get(f"ws-{n}", f"job-{n}")
                assert found is not None and found.state is State.QUEUED
            await control.pause("ws-b", "app", reason="maintenance", who="ops", duration_ms=60_000)
            note = await control.note("ws-b", "app")
            assert note is not None and note.who == "ops"
        finally:
            await client.aclose()

    asyncio.run(run())
    check = cluster.client()
    try:
        assert check.pttl(keys.app_outcome("ws-3", "job-3")) > 0  # created with its TTL
        assert 0 < check.pttl(keys.pause_note("ws-b", "app")) <= 60_000
    finally:
        check.close()


def test_a_final_record_written_first_is_kept(cluster: Cluster) -> None:
    settings = _settings(cluster)

    async def run() -> Outcome | None:
        client = connect_async(settings.redis)
        outcomes = AsyncOutcomes(client, settings.app)
        try:
            await outcomes.create("ws-f", Outcome("job-f", State.DELIVERED, status=200))
            await outcomes.create("ws-f", Outcome("job-f", State.QUEUED))  # too late
            return await outcomes.get("ws-f", "job-f")
        finally:
            await client.aclose()

    found = asyncio.run(run())
    assert found is not None and found.state is State.DELIVERED
