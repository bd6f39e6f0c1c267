"""Forget on a real Redis Cluster: each shard's search, removal and lease are one slot's,
the key searches (answers, outcomes) scan every primary, and no trace is left on any node."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from service.config import Settings
from service.jobs import Traffic
from service.store.connections import connect_async
from service.store.dead_letters import DeadLetter, DeadLetterStore
from service.store.forget import Forgetting
from service.store.queue import Queue
from tests.support.cluster import Cluster
from tests.support.forget import (
    app_send_job,
    email,
    person_id,
    pipelines_job,
    stream_people,
    traces,
    track_job,
)

PEOPLE = [person_id(i) for i in range(40)]
GONE = PEOPLE[5]
SHARDS = 8
T = TypeVar("T")


def _run(settings: Settings, work: Callable[[Queue, Forgetting], Awaitable[T]]) -> T:
    async def main() -> T:
        client = connect_async(settings.redis)
        queue = Queue(client, settings.redis, settings.queue, None)
        forgetting = Forgetting(client, settings.queue, lease_ms=settings.drain.lease_ms)
        try:
            return await work(queue, forgetting)
        finally:
            await queue.aclose()
            await client.aclose()

    return asyncio.run(main())


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    nodes = Cluster(tmp_path / "cluster")
    yield nodes
    nodes.stop()


def test_forget_leaves_no_trace_on_any_node(cluster: Cluster) -> None:
    # The broker is never reached here (no triggers): any standalone URL will do.
    settings = Settings(
        redis_url=cluster.url,
        redis_cluster=True,
        broker_url="redis://127.0.0.1:1/0",
        shards=SHARDS,
        linger_ms=0,
    )

    async def fill(queue: Queue, _: Forgetting) -> None:
        for seq in range(5):
            await queue.enqueue("default", [track_job(p, seq) for p in PEOPLE])
        await queue.enqueue("default", [track_job(p, 9) for p in PEOPLE], traffic=Traffic.BULK)
        await queue.enqueue("default", [pipelines_job(p, 0) for p in PEOPLE])
        for p in PEOPLE:
            await queue.enqueue("default", [app_send_job(p)])

    async def forget(_: Queue, forgetting: Forgetting) -> dict[str, int]:
        return (await forgetting.forget("default", [GONE], who="t")).removed

    sync = cluster.client()
    letters = [
        DeadLetter("v2", track_job(p, 50).payload, "", "invalid", "invalid", 400) for p in PEOPLE
    ]
    DeadLetterStore(sync).add("default", letters)
    _run(settings, fill)
    found = traces(sync, [GONE])
    assert len({cluster.node_of(key).port for key in found}) > 1  # on several primaries
    removed = _run(settings, forget)
    assert removed["pending_jobs"] == 5 + 1 + 1 + 1
    assert removed["dead_letters"] == 1
    assert traces(sync, [GONE, email(GONE)]) == {}
    left = stream_people(sync, "default", SHARDS)
    assert left == {p: list(range(5)) for p in PEOPLE if p != GONE}
