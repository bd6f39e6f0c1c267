"""A cluster primary killed under ingest: the api rides it out for ``CIOQ_REDIS_OUTAGE_WAIT_S``.

One shard, so every event lands in one slot, on the primary that is SIGKILLed. While
its replica is promoted (or the primary is back, restarted at once) requests are held,
never answered 5xx; nothing that may have run is sent twice (`RidesOutFailovers` retries
only a command whose connection never came up, or a CLUSTERDOWN refusal), so the stream
holds exactly one job per request answered 200 after the kill.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from service import keys
from service.api.app import create_app
from service.config import Settings
from service.jobs import Lane
from service.store.connections import connect_async
from tests.support.cluster import Cluster
from tests.support.http_server import serve_in_thread
from tests.support.processes import wait_until
from tests.support.triggers import RecordingTriggers

pytestmark = [pytest.mark.xdist_group("cluster")]

AUTH = ("any-site", "dev-ingest-key")
WAIT_S = 40.0
STREAM = keys.shard_keys("default", 0, Lane.TRACK).stream
#: Requests sent at once right after the kill, then one at a time until the cluster is ok.
AT_ONCE = 6


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    nodes = Cluster(tmp_path / "cluster", fsync="always")
    yield nodes
    nodes.stop()


@pytest.mark.parametrize("outage", ["failover", "restart"])
def test_a_primary_killed_is_ridden_out_without_a_5xx_and_nothing_twice(
    cluster: Cluster, redis_url: str, outage: str
) -> None:
    settings = Settings(
        redis_url=cluster.url,
        redis_cluster=True,
        broker_url=redis_url,  # start-up checks reach it; triggers are recorded, not sent
        redis_timeout_s=2,
        redis_outage_wait_s=WAIT_S,
        shards=1,
        linger_ms=0,
        backlog_refresh_ms=100,  # ingest's backlog reading (a cluster pipeline) meets it too
    )
    victim = cluster.node_of(STREAM)
    app = create_app(settings, triggers=RecordingTriggers())
    with (
        serve_in_thread(app) as url,
        httpx.Client(base_url=url, auth=AUTH, timeout=WAIT_S + 30) as api,
    ):

        def post(n: int) -> tuple[int, float]:
            started_s = time.monotonic()
            # Every other request keyed: the idempotency GET and SET meet the outage too.
            headers = {"Idempotency-Key": f"k{n}"} if n % 2 else {}
            answer = api.post(f"/api/v1/customers/p{n}/events", json={"name": "x"}, headers=headers)
            return answer.status_code, time.monotonic() - started_s

        assert post(0)[0] == 200
        assert victim.proc is not None
        victim.proc.kill()
        back = threading.Thread(
            target=victim.start if outage == "restart" else lambda: cluster.wait_failover(victim)
        )
        back.start()
        with ThreadPoolExecutor(AT_ONCE) as pool:
            answers = list(pool.map(post, range(1, AT_ONCE + 1)))
        n = AT_ONCE
        while back.is_alive():
            n += 1
            answers.append(post(n))
        back.join()
        cluster.wait_ok()
        answers.append(post(n + 1))
    statuses = [status for status, _ in answers]
    print(f"{outage}: statuses {statuses}, slowest {max(s for _, s in answers):.1f} s")
    assert statuses == [200] * len(answers)
    assert max(s for _, s in answers) < WAIT_S + 10  # held, within the wait
    # One job per request answered after the kill (the first may be lost with the node).
    primary = cluster.node_of(STREAM)
    client = primary.client()
    stored = wait_until(lambda: client.xlen(STREAM) or None, timeout_s=10, what="the stream")
    assert stored - len(answers) in (0, 1), (stored, len(answers))


def test_only_what_cannot_apply_twice_is_sent_again(cluster: Cluster, redis_url: str) -> None:
    """With the primary of one slot dead, until its replica takes over: a pipeline of
    writes (it could span nodes, some reached) fails at once; a transaction (one node,
    never sent) and a pipeline of reads wait for the promoted replica, and the
    transaction's INCR is applied once."""
    settings = Settings(
        redis_url=cluster.url,
        redis_cluster=True,
        broker_url=redis_url,
        redis_timeout_s=2,
        redis_outage_wait_s=WAIT_S,
    )
    tag = keys.shard_keys("default", 0, Lane.TRACK).tag
    counter, value = f"probe:{tag}:counter", f"probe:{tag}:value"
    victim = cluster.node_of(STREAM)

    async def run() -> None:
        client = connect_async(settings.redis)
        try:
            assert await client.get(counter) is None  # connected, topology read
            assert victim.proc is not None
            victim.proc.kill()
            writes = client.pipeline(transaction=False)
            writes.set(value, "x")
            started_s = time.monotonic()
            with pytest.raises(redis.ConnectionError):
                await writes.execute()
            assert time.monotonic() - started_s < WAIT_S / 4  # given up, not held
            transaction = client.pipeline(transaction=True)
            transaction.incr(counter)
            reads = client.pipeline(transaction=False)
            reads.get(counter)
            applied, read = await asyncio.gather(transaction.execute(), reads.execute())
            assert applied == [1] and read in ([None], [b"1"])
            assert await client.get(counter) == b"1"  # once
        finally:
            await client.aclose()

    asyncio.run(run())
    cluster.wait_failover(victim)
