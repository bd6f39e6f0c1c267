"""Group commit against a redis-server of the test's own (its command counts are ours)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from service import keys
from service.config import Settings
from service.errors import StoreUnavailable
from service.jobs import Job, Lane, shard_for
from service.lanes.track.jobs import v2_job
from service.store.group_commit import GroupCommit, Stored
from service.store.queue import Queue
from service.store.slots import SlotWriter
from tests.support.processes import RedisServer, free_port
from tests.support.valkey import valkey_server

SHARDS = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    yield srv
    srv.stop()


@pytest.fixture
def url(server: RedisServer) -> str:
    client = server.client()
    client.flushall()
    client.config_resetstat()
    client.close()
    return server.url


def job(person: int, seq: int) -> Job:
    return v2_job(
        {
            "type": "person",
            "action": "identify",
            "identifiers": {"id": f"p{person}"},
            "attributes": {"seq": seq},
        }
    )


def script_calls(url: str) -> int:
    """Script runs that did their work: an EVALSHA refused NOSCRIPT (the first on a server
    that has not loaded the script) is counted in ``failed_calls`` and re-sent."""
    client = redis.Redis.from_url(url)
    stats = client.info("commandstats")
    client.close()
    return sum(
        int(v["calls"]) - int(v.get("failed_calls", 0))
        for k, v in stats.items()
        if k in ("cmdstat_evalsha", "cmdstat_eval")
    )


def stored(url: str) -> dict[int, list[bytes]]:
    client = redis.Redis.from_url(url)
    out: dict[int, list[bytes]] = {}
    for shard in range(SHARDS):
        rows: list[tuple[bytes, dict[bytes, bytes]]]
        rows = client.xrange(keys.shard_keys("default", shard, Lane.TRACK).stream)  # type: ignore[assignment]
        out[shard] = [fields[b"o"] for _, fields in rows]
    client.close()
    return out


async def _run_concurrently(url: str, requests: list[list[Job]], **kwargs: int) -> list[Stored]:
    client = aioredis.Redis.from_url(url)
    writer = SlotWriter(client, "enqueue", seed_url=url)
    commit = GroupCommit(writer, Settings(redis_url=url, shards=SHARDS).queue, **kwargs)
    try:
        return list(await asyncio.gather(*(commit.store("default", jobs) for jobs in requests)))
    finally:
        await client.aclose()


def test_concurrent_requests_share_calls_and_keep_their_order(url: str) -> None:
    requests = [[job(r % 7, r * 10 + i) for i in range(3)] for r in range(40)]
    results = asyncio.run(_run_concurrently(url, requests))
    calls = script_calls(url)
    assert 1 <= calls < 40 // 2, "requests that arrive together share a call per shard"
    assert [r.jobs for r in results] == requests
    streams = stored(url)
    assert sum(len(v) for v in streams.values()) == 120
    for request in requests:  # each request's jobs are in its shard, in order
        shard = shard_for("default", request[0].route, SHARDS)
        positions = [streams[shard].index(j.payload) for j in request]
        assert positions == sorted(positions)


def test_a_shard_touched_by_several_requests_is_triggered_once(url: str) -> None:
    requests = [[job(1, seq)] for seq in range(10)]
    results = asyncio.run(_run_concurrently(url, requests))
    fresh = [(shard.lane, shard.shard) for r in results for shard in r.fresh]
    assert fresh == [(Lane.TRACK, shard_for("default", requests[0][0].route, SHARDS))]


def test_groups_stay_within_the_job_cap(url: str) -> None:
    requests = [[job(r, 0), job(r, 1)] for r in range(4)]
    asyncio.run(_run_concurrently(url, requests, max_jobs=3))
    # The first request commits alone; the other three cannot share a 3-job call.
    assert script_calls(url) == 4
    assert sum(len(v) for v in stored(url).values()) == 8


def test_redis_down_fails_every_waiting_request(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"

    async def main() -> list[object]:
        client = aioredis.Redis.from_url(dead, socket_connect_timeout=1)
        settings = Settings(redis_url=dead, shards=SHARDS)
        queue = Queue(client, settings.redis, settings.queue, None)
        try:
            return await asyncio.gather(
                *(queue.enqueue("default", [job(r, 0)]) for r in range(5)),
                return_exceptions=True,
            )
        finally:
            await client.aclose()

    results = asyncio.run(main())
    assert all(isinstance(r, StoreUnavailable) for r in results), results


@pytest.mark.parametrize("server_kind", ["redis", "valkey"])
def test_over_maxmemory_a_retry_still_answers_and_no_request_stores_past_the_limit(
    tmp_path: Path, server_kind: str
) -> None:
    """A retry whose jobs an earlier try stored only renews its marker (PEXPIRE, which
    Redis allows over maxmemory) and answers as the first try did. Sharing a call with it,
    another request's XADDs must still be refused: Redis checks maxmemory at a script's
    first write only, so with the renewal first the later parts filled memory past the
    limit."""
    exe = valkey_server() if server_kind == "valkey" else None
    server = RedisServer(tmp_path / "redis", exe=exe)
    first, retried, fresh = [job(1, 0)], [job(1, 0)], [job(2, 0)]
    assert shard_for("default", first[0].route, SHARDS) != shard_for(
        "default", fresh[0].route, SHARDS
    )

    async def main() -> list[object]:
        client = aioredis.Redis.from_url(server.url)
        commit = GroupCommit(
            SlotWriter(client, "enqueue", seed_url=server.url),
            Settings(redis_url=server.url, shards=SHARDS).queue,
        )
        try:
            await commit.store("default", first, request_id="req-1")
            used = int((await client.info("memory"))["used_memory"])
            await client.config_set("maxmemory", str(used - 1024 * 1024))
            # The retry's part comes first in the shared call, the new request's after it.
            together = asyncio.gather(
                commit.store("default", retried, request_id="req-1"),
                commit.store("default", fresh, request_id="req-2"),
                return_exceptions=True,
            )
            return list(await together)
        finally:
            await client.aclose()

    try:
        retry, new = asyncio.run(main())
        assert isinstance(retry, Stored) and (retry.jobs, retry.earlier) == ([], b"1")
        assert isinstance(new, StoreUnavailable), new
        rows = stored(server.url)
        assert sum(len(v) for v in rows.values()) == 1, "only the first try's job"
    finally:
        server.stop()
