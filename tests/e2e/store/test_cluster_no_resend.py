"""F10 on a real cluster: the store's cluster clients never send a command again after a
timeout (it may have run), and still follow redirects (a refused command did not run).

redis-py's cluster client retries a timed-out command 10 times by default: a script
whose reply was late ran again, which is how ``acquire.lua`` could find its own lease
and leave the shard held by nobody, and a dead letter could be added twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from service import keys
from service.config import Settings
from service.errors import StoreUnavailable
from service.jobs import Lane
from service.store.connections import connect_async, connect_sync, store_errors
from tests.support.cluster import Cluster, reshard
from tests.support.processes import wait_until

#: Counts its runs, then keeps its node busy past the client's timeout, so the reply
#: comes too late: the client cannot know the script ran.
SLOW_COUNT = """
local runs = redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local start_us = t[1] * 1000000 + t[2]
repeat
  t = redis.call('TIME')
until t[1] * 1000000 + t[2] - start_us > tonumber(ARGV[1])
return runs
"""
BUSY_US = 600_000
TIMEOUT_S = 0.2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    nodes = Cluster(tmp_path_factory.mktemp("cluster"))
    yield nodes
    nodes.stop()


def _settings(cluster: Cluster) -> Settings:
    return Settings(
        redis_url=cluster.url,
        redis_cluster=True,
        redis_timeout_s=TIMEOUT_S,
        broker_url="redis://x:1/0",
    )


def _runs_settle(cluster: Cluster, key: str) -> int:
    """The run count once the node is idle again and any resent copy had time to run."""
    node = cluster.node_of(key).client()
    wait_until(lambda: node.ping(), timeout_s=10, what="node idle")
    time.sleep(BUSY_US / 1e6 * 3)  # a resent script would be queued behind the first
    return int(node.get(key) or 0)


@pytest.mark.xdist_group("cluster")
def test_the_blocking_cluster_client_does_not_resend_a_timed_out_script(
    cluster: Cluster,
) -> None:
    key = "f10:sync"
    client = connect_sync(_settings(cluster).redis)
    try:
        slow = client.register_script(SLOW_COUNT)
        with pytest.raises(StoreUnavailable), store_errors("slow"):
            slow(keys=[key], args=[BUSY_US])
        assert _runs_settle(cluster, key) == 1
    finally:
        client.close()


@pytest.mark.xdist_group("cluster")
def test_the_asyncio_cluster_client_does_not_resend_a_timed_out_script(
    cluster: Cluster,
) -> None:
    key = "f10:async"

    async def run() -> None:
        client = connect_async(_settings(cluster).redis)
        try:
            slow = client.register_script(SLOW_COUNT)
            with pytest.raises(StoreUnavailable), store_errors("slow"):
                await slow(keys=[key], args=[BUSY_US])
        finally:
            await client.aclose()

    asyncio.run(run())
    assert _runs_settle(cluster, key) == 1


@pytest.mark.xdist_group("cluster")
def test_a_transaction_sent_to_a_moved_slot_follows_the_redirect(cluster: Cluster) -> None:
    """MOVED proves the transaction did not run, so the policy sends it again."""
    shard = keys.shard_keys("default", 1, Lane.TRACK)
    client = connect_sync(_settings(cluster).redis)
    try:
        client.set(shard.stream, b"before")  # the client learns the slot's owner
        source = cluster.node_of(shard.stream)
        target = next(n for n in cluster.primaries() if n is not source)
        slots = sum(
            end - start + 1
            for start, end, (_, port, *_), *_ in source.client().cluster("slots")
            if port == source.port
        )
        reshard(cluster, source, target, slots)
        pipe = client.pipeline(transaction=True)
        pipe.set(shard.stream, b"after")
        pipe.incr(shard.trigger)
        assert pipe.execute()[1] == 1
    finally:
        client.close()
    assert cluster.node_of(shard.stream) is target
    assert target.client().get(shard.stream) == b"after"
