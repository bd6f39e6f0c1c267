"""Group commit: the jobs of ingest requests that arrive together share one Redis call.

Under concurrent load most of a single-op request's cost in the api is the Redis round
trip itself: redis-py spends ~60 µs of CPU on any command, more than cioq's own routing,
validation and translation together. Requests that reach `GroupCommit.store` while a
call is in flight wait for the next one, which stores all of them with one
``lua/enqueue.lua`` call; an idle api still sends each request's call at once.

Guarantees are those of one request's call: a request is answered only after Redis
confirmed its jobs; a failed call fails every request in it and none is half stored (a
script is refused at its first write or runs to the end); each request's jobs keep their
order. A shard whose trigger marker the call took is reported fresh to one request only,
so it gets one drain trigger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from service import keys
from service.config import Settings
from service.jobs import Job, Traffic, shard_for
from service.store.connections import load_script

#: Jobs one call carries at most (a bigger request goes alone): bounds how long one
#: script holds Redis.
MAX_GROUP_JOBS = 1000

Stored = tuple[list[bytes], list[keys.ShardKeys]]  # stream ids of the jobs, shards to trigger


@dataclass(slots=True)
class _Waiter:
    jobs: Sequence[Job]
    shards: list[keys.ShardKeys]
    done: asyncio.Future[Stored]


class GroupCommit:
    """Stores requests' jobs in their shards' streams, several requests per script call."""

    def __init__(
        self, client: aioredis.Redis, settings: Settings, *, max_jobs: int = MAX_GROUP_JOBS
    ) -> None:
        self._script = load_script(client, "enqueue")
        self._shards = settings.shards
        self._trigger_ttl_ms = settings.trigger_ttl_ms
        self._max_jobs = max_jobs
        self._waiting: list[_Waiter] = []
        self._busy = False  # a call is in flight; new requests wait for the next one
        self._flusher: asyncio.Task[None] | None = None  # kept so the task is not collected

    async def store(
        self, workspace: str, jobs: Sequence[Job], traffic: Traffic = Traffic.LIVE
    ) -> Stored:
        """Store `jobs` of one request; returns their ids and the shards to trigger.

        Raises what the Redis call raised (redis.RedisError for store trouble).
        """
        loop = asyncio.get_running_loop()
        shards = [
            keys.shard_keys(
                workspace, shard_for(workspace, job.route, self._shards), job.lane, traffic
            )
            for job in jobs
        ]
        waiter = _Waiter(jobs, shards, loop.create_future())
        self._waiting.append(waiter)
        if not self._busy:
            # Nothing in flight: commit in this request's own task, with no hand-off.
            self._busy = True
            try:
                await self._commit(self._take())
            finally:
                self._hand_off(loop)
        return await waiter.done

    def _hand_off(self, loop: asyncio.AbstractEventLoop) -> None:
        """Requests that queued up meanwhile go in the next call, from a task of their own."""
        if self._waiting:
            self._flusher = loop.create_task(self._flush())
        else:
            self._busy = False

    async def _flush(self) -> None:
        try:
            while self._waiting:
                await self._commit(self._take())
        finally:
            self._flusher = None
            self._busy = False

    def _take(self) -> list[_Waiter]:
        """The oldest waiters whose jobs fit in one call (always at least one)."""
        count, taken = 0, 0
        for waiter in self._waiting:
            if taken and count + len(waiter.jobs) > self._max_jobs:
                break
            count += len(waiter.jobs)
            taken += 1
        group, self._waiting = self._waiting[:taken], self._waiting[taken:]
        return group

    async def _commit(self, group: list[_Waiter]) -> None:
        position: dict[keys.ShardKeys, int] = {}
        for waiter in group:
            for shard in waiter.shards:
                position.setdefault(shard, len(position) + 1)
        lua_keys = [shard.stream for shard in position]
        lua_keys += [shard.trigger for shard in position]
        args: list[Any] = [self._trigger_ttl_ms]
        for waiter in group:
            for job, shard in zip(waiter.jobs, waiter.shards, strict=True):
                args += (position[shard], job.field, job.payload)
        try:
            results: list[Any] = await self._script(keys=lua_keys, args=args)
        except asyncio.CancelledError:
            for waiter in group:
                waiter.done.cancel()
            raise
        except Exception as exc:
            for waiter in group:
                if not waiter.done.done():
                    waiter.done.set_exception(exc)
            return
        job_count = len(args) // 3
        fresh = {key for key, flag in zip(position, results[job_count:], strict=True) if flag}
        offset = 0
        for waiter in group:
            ids = results[offset : offset + len(waiter.jobs)]
            offset += len(waiter.jobs)
            mine = []
            for shard in dict.fromkeys(waiter.shards):
                if shard in fresh:
                    fresh.discard(shard)
                    mine.append(shard)
            if not waiter.done.done():
                waiter.done.set_result((list(ids), mine))
