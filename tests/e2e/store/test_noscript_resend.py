"""F7 on a redis-server of the test's own: a NOSCRIPT on one part of a write resends only
that part. The test empties the script cache, which is server-wide: on the shared Redis it
failed other tests' scripts mid-run."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from service import keys
from service.jobs import Lane
from service.store.slots import Part, SlotWriter
from tests.support.processes import RedisServer, own_redis_url


@pytest.fixture
def redis_url(own_redis: RedisServer) -> str:
    return own_redis_url(own_redis)


def test_noscript_on_one_part_resends_only_that_part(redis_url: str) -> None:
    """F7: after a NOSCRIPT on part 1, 00f4e48 re-sent part 2 too, which was stored."""

    async def run() -> tuple[int, int]:
        client = aioredis.Redis.from_url(redis_url)
        other = aioredis.Redis.from_url(redis_url)  # another api process
        writer = SlotWriter(client, "enqueue", seed_url=redis_url)
        a = keys.shard_keys("default", 0, Lane.TRACK)
        b = keys.shard_keys("default", 1, Lane.TRACK)
        parts = [
            Part([a.stream, a.trigger], [1000, 1000, 0, "", 1, "op", b"x"]),
            Part([b.stream, b.trigger], [1000, 1000, 0, "", 1, "op", b"y"]),
        ]
        await client.script_flush()
        real_pipeline = client.pipeline
        state = {"first": True}

        class Interleaved:
            """Redis serving process Y's SCRIPT LOAD between part 1 and part 2."""

            def __init__(self, **kw: Any) -> None:
                self.inner = real_pipeline(**kw)
                self.cmds: list[tuple[Any, ...]] = []

            def evalsha(self, *args: Any) -> None:
                self.cmds.append(("EVALSHA", *args))

            def execute_command(self, *args: Any) -> None:
                self.cmds.append(args)

            def __len__(self) -> int:
                return len(self.cmds)

            async def execute(self, raise_on_error: bool = True) -> list[Any]:
                if not state["first"]:
                    for c in self.cmds:
                        self.inner.execute_command(*c)
                    return list(await self.inner.execute(raise_on_error=raise_on_error))
                state["first"] = False
                replies: list[Any] = []
                try:
                    replies.append(await client.execute_command(*self.cmds[0]))
                except NoScriptError as exc:
                    replies.append(exc)
                await other.script_load(writer._source)
                for c in self.cmds[1:]:
                    replies.append(await client.execute_command(*c))
                return replies

        client.pipeline = lambda **kw: Interleaved(**kw)  # type: ignore[method-assign,assignment]
        results = await writer.run(parts)
        assert not any(isinstance(r, BaseException) for r in results)
        n_a, n_b = await client.xlen(a.stream), await client.xlen(b.stream)
        await client.aclose()
        await other.aclose()
        return n_a, n_b

    assert asyncio.run(run()) == (1, 1)
