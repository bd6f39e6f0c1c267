"""A stream entry's fields across versions: the job's field, the producer's since named
producers, and fields a later version adds, which this one reads past (so a rollback to it
still delivers what the newer api stored)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

import service.lanes.registry  # noqa: F401  (registers every lane's job kinds)
from service import keys
from service.jobs import PRODUCER_FIELD, Lane
from service.lanes.track.jobs import v2_job
from service.store.shards import ShardStore

JOB = v2_job({"type": "person", "action": "identify", "identifiers": {"id": "p1"}})


@pytest.mark.parametrize(
    ("extra", "producer"),
    [
        ({}, ""),
        ({PRODUCER_FIELD: b"billing"}, "billing"),
        ({PRODUCER_FIELD: b"billing", b"zz-later": b"a later version's field"}, "billing"),
        ({b"zz-later": b"1"}, ""),
    ],
    ids=["job-only", "with-producer", "with-a-later-field", "later-field-no-producer"],
)
def test_an_entry_reads_as_its_job_and_producer(
    redis_client: redis.Redis, extra: dict[bytes, bytes], producer: str
) -> None:
    shard = keys.shard_keys("default", 0, Lane.TRACK)
    fields: dict[Any, Any] = {JOB.field: JOB.payload, **extra}
    redis_client.xadd(shard.stream, fields)
    [entry] = ShardStore(redis_client).read(shard, after=None, count=10)
    assert (entry.kind, entry.payload, entry.producer) == (JOB.kind, JOB.payload, producer)


def test_an_entry_without_a_job_field_is_refused(redis_client: redis.Redis) -> None:
    shard = keys.shard_keys("default", 0, Lane.TRACK)
    redis_client.xadd(shard.stream, {PRODUCER_FIELD: b"billing"})
    with pytest.raises(ValueError):
        ShardStore(redis_client).read(shard, after=None, count=10)
