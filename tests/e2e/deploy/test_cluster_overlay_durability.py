"""The cluster overlay's default durability starts on a cluster without AOF.

Managed cluster-mode services without AOF (ElastiCache, Memorystore Cluster) look, to
cioq's start-up checks, like a local Redis Cluster started with ``appendonly no`` and a
replica per primary. At the overlay's default level (``replica``: ``WAIT 1``, no AOF)
the checks pass and writes are confirmed by a replica; ``replicated`` (the old default)
refuses to start there, which is what every pod did on ElastiCache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.api.app import create_app
from service.config import Settings
from service.errors import ConfigError
from service.jobs import Job, dumps
from service.store.connections import connect_sync
from service.store.durability import Confirmation
from service.store.startup_checks import check_sync
from tests.support.cluster import Cluster
from tests.support.k8s import named, render
from tests.support.processes import wait_until
from tests.support.triggers import RecordingTriggers

JOBS = 16


@pytest.fixture(scope="module")
def overlay_level(tmp_path_factory: pytest.TempPathFactory) -> str:
    docs = render("cluster", tmp_path_factory.mktemp("cluster"))
    config: dict[str, str] = named(docs, "ConfigMap", "cioq-config-")["data"]
    assert config["CIOQ_REDIS_CLUSTER"] == "true"
    return config["CIOQ_DURABILITY"]


@pytest.fixture
def aof_less_cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path / "cluster", appendonly=False)
    try:
        # A replica counts as connected while its first full sync still runs; WAIT then
        # blocks until its timeout. A managed service's replicas are long in sync.
        wait_until(
            lambda: all(
                n.client().info("replication").get("master_link_status") == "up"
                for n in cluster.live()
                if n not in cluster.primaries()
            ),
            timeout_s=30,
            what="every replica in sync",
        )
        yield cluster
    finally:
        cluster.stop()


def _settings(cluster: Cluster, broker_url: str, level: Any) -> Settings:
    return Settings(
        redis_url=cluster.url,
        redis_cluster=True,
        broker_url=broker_url,
        durability=level,
        shards=8,
        startup_redis_wait_s=5,
    )


def _job(person: int) -> Job:
    op = {"type": "person", "action": "identify", "identifiers": {"id": f"p{person}"}}
    return Job("v2", f"p{person}", dumps(op), "identify")


async def _enqueue(settings: Settings) -> list[Any]:
    app = create_app(settings, triggers=RecordingTriggers())
    try:
        await app.gate.startup()
        return await asyncio.gather(
            *(app.queue.enqueue("default", [_job(n)]) for n in range(JOBS)),
            return_exceptions=True,
        )
    finally:
        await app.aclose()


def test_the_default_level_starts_and_confirms_on_a_cluster_without_aof(
    overlay_level: str, aof_less_cluster: Cluster, redis_url: str
) -> None:
    assert overlay_level == "replica"
    for node in aof_less_cluster.nodes:
        assert node.client().info("persistence")["aof_enabled"] == 0
    settings = _settings(aof_less_cluster, redis_url, overlay_level)
    client = connect_sync(settings.redis)
    try:
        verdict = check_sync(client, settings.redis)  # the worker's start-up check
    finally:
        client.close()
    assert verdict.confirmation == Confirmation(False, 1, settings.redis.durability_timeout_ms)
    outcomes = asyncio.run(_enqueue(settings))  # the api's start-up gate, then writes
    assert [o for o in outcomes if isinstance(o, BaseException)] == []
    stored = sum(
        p.client().xlen(key)
        for p in aof_less_cluster.primaries()
        for key in p.client().scan_iter("cioq:q:*")
    )
    assert stored == JOBS


def test_replicated_refuses_to_start_there(aof_less_cluster: Cluster, redis_url: str) -> None:
    settings = _settings(aof_less_cluster, redis_url, "replicated")
    client = connect_sync(settings.redis)
    try:
        with pytest.raises(ConfigError, match="appendonly yes"):
            check_sync(client, settings.redis)
    finally:
        client.close()
