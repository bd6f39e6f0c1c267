"""The ingest side of the queue: store accepted jobs durably, then wake a drain.

`Queue.enqueue` writes every job of one request in one ``MULTI``: all of them are
stored or none is. Only after Redis confirms (and, at the ``fsync`` durability level,
after ``WAITAOF`` confirms the AOF is on disk) does ingest answer 2xx. Triggers are sent
afterwards and are debounced per shard; a lost trigger is recovered by the sweeper.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence

import redis
import redis.asyncio as aioredis

from service import keys
from service.config import Settings
from service.errors import StoreUnavailable
from service.jobs import Job, shard_for
from service.triggers import Triggers

log = logging.getLogger("cioq.queue")


def connect_async(settings: Settings) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        health_check_interval=30,
    )


def connect_sync(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        health_check_interval=30,
    )


class Queue:
    """Durable writes of accepted jobs into their shards' streams."""

    def __init__(
        self,
        client: aioredis.Redis,
        settings: Settings,
        triggers: Triggers | None,
        *,
        use_waitaof: bool = False,
    ) -> None:
        self.redis = client
        self.settings = settings
        self.triggers = triggers
        self.use_waitaof = use_waitaof

    async def enqueue(self, workspace: str, jobs: Sequence[Job]) -> list[bytes]:
        """Store `jobs` atomically; returns their stream ids. Raises StoreUnavailable."""
        shards = self.settings.shards
        by_shard: dict[int, list[Job]] = defaultdict(list)
        order: list[int] = []
        for job in jobs:
            shard = shard_for(workspace, job.route, shards)
            by_shard[shard].append(job)
            order.append(shard)
        pipe = self.redis.pipeline(transaction=True)
        for job, shard in zip(jobs, order, strict=True):
            pipe.xadd(keys.shard_keys(workspace, shard).stream, {job.field: job.payload})
        touched = list(by_shard)
        for shard in touched:
            pipe.set(
                keys.shard_keys(workspace, shard).trigger,
                1,
                nx=True,
                px=self.settings.trigger_ttl_ms,
            )
        try:
            results = await pipe.execute()
            if self.use_waitaof:
                await self._wait_fsync()
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        ids: list[bytes] = results[: len(jobs)]
        fresh = [s for s, was_set in zip(touched, results[len(jobs) :], strict=True) if was_set]
        if fresh:
            await self._trigger(workspace, fresh)
        return ids

    async def _wait_fsync(self) -> None:
        local, _ = await self.redis.execute_command("WAITAOF", 1, 0, 5000)  # type: ignore[no-untyped-call]
        if int(local) < 1:
            raise StoreUnavailable("WAITAOF: the write was not fsynced to the AOF in time")

    async def _trigger(self, workspace: str, shards: list[int]) -> None:
        if self.triggers is None:
            return
        countdown_s = self.settings.linger_ms / 1000
        try:
            await asyncio.to_thread(self._send_all, workspace, shards, countdown_s)
        except Exception:  # the job is stored; the sweeper re-sends lost triggers
            log.warning("drain trigger failed; the sweeper will pick the shard up", exc_info=True)

    def _send_all(self, workspace: str, shards: list[int], countdown_s: float) -> None:
        assert self.triggers is not None
        for shard in shards:
            self.triggers.send(workspace, shard, countdown_s=countdown_s)

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except redis.RedisError:
            return False
