"""The trigger marker around a drain that re-triggers itself: real Redis, broker, sandbox."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from sandbox import SandboxConfig, create_sandbox_app
from service import keys
from service.config import Settings
from service.jobs import Lane
from service.lanes.registry import clients as lane_clients
from service.store.dead_letters import DeadLetterStore
from service.store.shards import ShardStore
from service.triggers import DRAIN_QUEUE, Triggers
from tests.support.drain import enqueue, person_op
from tests.support.http_server import serve_in_thread
from tests.support.sandbox import KEY, SITE
from workers.drain import Drainer, DrainerSettings


@pytest.fixture
def sandbox_url() -> Iterator[str]:
    with serve_in_thread(create_sandbox_app(SandboxConfig(credentials={SITE: KEY}))) as url:
        yield url


def drainer(settings: Settings, client: redis.Redis, triggers: Triggers | None) -> Drainer:
    clients = lane_clients(settings)
    return Drainer(
        DrainerSettings.of(settings), ShardStore(client), DeadLetterStore(client), clients, triggers
    )


@pytest.mark.parametrize(
    ("with_triggers", "ops", "stopped", "marker_kept"),
    [
        (True, 3, "linger", True),  # it re-triggers itself: writes meanwhile send none
        (True, 0, "empty", False),  # nothing scheduled: the next write must trigger
        (False, 3, "linger", False),  # no broker to re-trigger through: never strand a job
    ],
)
def test_marker_outlives_a_drain_only_until_its_own_retrigger(
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    redis_url: str,
    sandbox_url: str,
    with_triggers: bool,
    ops: int,
    stopped: str,
    marker_kept: bool,
) -> None:
    settings = make_settings(shards=1, track_url=sandbox_url, linger_ms=5000, broker_url=redis_url)
    triggers = Triggers(redis_url) if with_triggers else None
    shard = keys.shard_keys("default", 0, Lane.TRACK)
    enqueue(redis_client, [person_op(i) for i in range(ops)])
    redis_client.set(shard.trigger, 1)
    try:
        report = drainer(settings, redis_client, triggers).drain("default", 0, Lane.TRACK)
    finally:
        if triggers is not None:
            triggers.close()
    assert report.stopped == stopped
    ttl_ms = int(redis_client.pttl(shard.trigger))
    if marker_kept:
        assert report.retrigger_s is not None
        expected = report.retrigger_s * 1000 + settings.queue.trigger_ttl_ms
        assert expected - 1000 < ttl_ms <= expected
        assert redis_client.llen(DRAIN_QUEUE) == 1  # the drain's own re-trigger
    else:
        assert ttl_ms == -2  # cleared
    assert redis_client.xlen(shard.stream) == ops
