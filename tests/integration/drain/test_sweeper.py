"""The sweeper against a real Redis: which shards it triggers, and on which queue."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest
import redis

from service import keys
from service.config import Settings
from service.jobs import Lane, Traffic
from service.lanes.track.jobs import v2_job
from service.triggers import Triggers
from tests.support.triggers import RecordingTriggers
from workers.sweeper import Sweeper

SHARDS = 4


def _fill(client: redis.Redis, per_shard: int) -> None:
    op = {"type": "person", "action": "identify", "identifiers": {"id": "p"}}
    job = v2_job(op)
    for shard in range(SHARDS):
        stream = keys.shard_keys("default", shard, Lane.TRACK).stream
        pipe = client.pipeline()
        for _ in range(per_shard):
            pipe.xadd(stream, {job.field: job.payload})
        pipe.execute()


@pytest.mark.parametrize(
    ("per_shard", "bulk"),
    [
        (10, False),  # live traffic: one request's worth
        # A backlog spread thin: no shard holds a full read, the lane holds > 2 requests.
        # The live drain hands such a lane to the bulk queue, so the sweeper must too.
        (500, True),
    ],
)
def test_a_lane_holding_a_backlog_is_swept_onto_the_bulk_queue(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, per_shard: int, bulk: bool
) -> None:
    settings = make_settings(shards=SHARDS, max_batch_bytes=200_000, max_ops_per_read=4000)
    _fill(redis_client, per_shard)
    triggers = RecordingTriggers()
    sent = Sweeper(settings, redis_client, cast(Triggers, triggers)).sweep_once()
    assert sorted(shard for _, shard in sent) == list(range(SHARDS))
    assert triggers.queues == [(Traffic.LIVE, bulk)] * SHARDS
