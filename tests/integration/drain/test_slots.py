"""One-slot writes: request markers make retries store each job once; redirects are followed."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import keys
from service.config import Settings
from service.jobs import Job, Lane
from service.lanes.track.jobs import v2_job
from service.store.connections import connect_async
from service.store.queue import Queue
from tests.support.streams import stream_fields

SHARDS = 4


def _job(request: int, person: int, seq: int) -> Job:
    op = {
        "type": "person",
        "action": "identify",
        "identifiers": {"id": f"p{person}"},
        "attributes": {"request": request, "seq": seq},
    }
    return v2_job(op)


def _stored(client: redis.Redis) -> list[bytes]:
    return [
        fields[b"o"]
        for shard in range(SHARDS)
        for fields in stream_fields(client, keys.shard_keys("default", shard, Lane.TRACK).stream)
    ]


requests_st = st.lists(
    st.tuples(st.booleans(), st.lists(st.integers(0, 9), min_size=1, max_size=6)),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(requests=requests_st, sends=st.lists(st.integers(0, 5), min_size=1, max_size=12))
def test_keyed_requests_are_stored_once_however_often_sent(
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    requests: list[tuple[bool, list[int]]],
    sends: list[int],
) -> None:
    """Any mix of sends and repeats: a keyed request's jobs once each, in order; an unkeyed
    request's once per send."""
    redis_client.flushdb()
    jobs = [[_job(r, p, s) for s, p in enumerate(people)] for r, (_, people) in enumerate(requests)]
    order = [n % len(requests) for n in sends]

    async def send_all() -> None:
        client = connect_async(make_settings(shards=SHARDS).redis)
        settings = make_settings(shards=SHARDS)
        queue = Queue(client, settings.redis, settings.queue, None)
        try:
            await asyncio.gather(
                *(
                    queue.enqueue(
                        "default", jobs[r], request_id=f"req-{r}" if requests[r][0] else None
                    )
                    for r in order
                )
            )
        finally:
            await queue.aclose()
            await client.aclose()

    asyncio.run(send_all())
    stored = _stored(redis_client)
    counts = Counter(stored)
    sent = Counter(order)
    for r, (keyed, _) in enumerate(requests):
        expected = min(sent[r], 1) if keyed else sent[r]
        assert {counts[job.payload] for job in jobs[r]} <= {expected}, (r, keyed)
    for r in sent:  # per person, a request's jobs keep their order in the shard
        positions = [stored.index(job.payload) for job in jobs[r]]
        by_person: dict[str, list[int]] = {}
        for job, position in zip(jobs[r], positions, strict=True):
            by_person.setdefault(job.route, []).append(position)
        assert all(p == sorted(p) for p in by_person.values())
