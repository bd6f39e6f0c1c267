"""Every Redis round trip of the App send path on a real Redis Cluster, failed in turn.

The standalone sweep (tests/e2e/crash_points) again, on 3 primaries with a
replica each, at durability ``replica``: every ingest write, in-flight note and dead
letter is confirmed by a ``WAIT 1`` pipelined behind it (`service.store.durability`), so
those confirmations are round trips of the sweep too. Two modes more than standalone
(`CLUSTER_MODES`): the clients' slot maps going stale (real MOVED replies, followed by
redis-py or by the store's pipelines) and redis-py giving up on a slot in migration
(TRYAGAIN). Short form: each round trip once per mode; the full form
(``CIOQ_CRASH_POINTS=full``, `scripts/crash-points`) adds a repeated send.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from service.api.app import create_app
from service.config import Settings
from service.store.durability import Confirmation
from tests.support.app_send_path import SendPath, check, sweep
from tests.support.cluster import Cluster
from tests.support.crash_points import CLUSTER_MODES, Faults
from tests.support.http_server import serve_in_thread
from tests.support.triggers import RecordingTriggers

FULL = os.environ.get("CIOQ_CRASH_POINTS") == "full"
pytestmark = [pytest.mark.chaos, pytest.mark.xdist_group("cluster")]
DURABILITY_TIMEOUT_MS = 2000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    nodes = Cluster(tmp_path_factory.mktemp("cluster"))
    yield nodes
    nodes.stop()


@pytest.fixture
def path(
    cluster: Cluster,
    app_sandbox: httpx.Client,
    app_sandbox_url: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[SendPath]:
    settings = Settings(
        redis_url=cluster.url,
        redis_cluster=True,
        broker_url=redis_url,  # start-up checks reach it; triggers are recorded, not sent
        durability="replica",
        durability_timeout_ms=DURABILITY_TIMEOUT_MS,
        app_api_key=SecretStr("dev-app-key"),
        app_url=app_sandbox_url,
        upstream_timeout_s=2,
        app_send_wait_ms=20,
        shards=2,
        linger_ms=0,
    )
    faults = Faults(cluster.url, primaries=lambda: [n.url for n in cluster.primaries()])
    client = cluster.client()
    with serve_in_thread(create_app(settings, triggers=RecordingTriggers())) as url:
        faults.install(monkeypatch.setattr)
        path = SendPath(
            settings,
            url,
            app_sandbox,
            client,
            faults,
            confirmation=Confirmation(False, 1, DURABILITY_TIMEOUT_MS),
        )
        yield path
        path.close()
    client.close()


def _moved_replies(cluster: Cluster) -> int:
    """MOVED errors the nodes answered (Redis 7's error statistics)."""
    total = 0
    for node in cluster.live():
        stats = node.client().info("errorstats")
        total += int(stats.get("errorstat_MOVED", {}).get("count", 0))
    return total


def test_every_round_trip_of_a_send_on_a_cluster_failed_in_every_mode_sends_at_most_once(
    path: SendPath, cluster: Cluster
) -> None:
    before = _moved_replies(cluster)
    check(*sweep(path, CLUSTER_MODES), CLUSTER_MODES, "cluster crash points")
    moved = _moved_replies(cluster) - before
    print(f"MOVED replies followed: {moved}")
    assert moved > 0  # the stale slot maps really met redirects


@pytest.mark.skipif(not FULL, reason="full form: CIOQ_CRASH_POINTS=full (scripts/crash-points)")
def test_every_round_trip_of_a_repeated_send_on_a_cluster_sends_at_most_once(
    path: SendPath,
) -> None:
    check(*sweep(path, CLUSTER_MODES, repeats=2), CLUSTER_MODES, "cluster crash points, repeated")
