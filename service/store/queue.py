"""The ingest side of the queue: store accepted jobs durably, then wake a drain.

`Queue.enqueue` writes every job of one request in one Lua call (shared with requests
that arrive together, `service.store.group_commit`): all of them are stored or none is;
`Queue.replay` does the same for dead letters, each at most once. Only after Redis
confirms (and, at the ``fsync`` durability level, after ``WAITAOF`` confirms the AOF is
on disk) does ingest answer 2xx. Triggers are sent afterwards and are debounced per
shard; a lost trigger is recovered by the sweeper.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from service import keys
from service.config import Settings
from service.errors import StoreUnavailable
from service.jobs import Job, Traffic, shard_for
from service.metrics import definitions as metrics
from service.store.connections import load_script, store_errors
from service.store.group_commit import GroupCommit
from service.triggers import Triggers

log = logging.getLogger("cioq.queue")
T = TypeVar("T")


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
        self._group_commit = GroupCommit(client, settings)
        self._replay = load_script(client, "replay")

    async def enqueue(
        self, workspace: str, jobs: Sequence[Job], traffic: Traffic = Traffic.LIVE
    ) -> list[bytes]:
        """Store `jobs` atomically; returns their stream ids. Raises StoreUnavailable.

        One ``lua/enqueue.lua`` call, shared with the requests that arrive together
        (`service.store.group_commit`), stores all of them or none. Bulk jobs go to the
        workspace's bulk streams.
        """
        ids, fresh = await self._durably(self._group_commit.store(workspace, jobs, traffic))
        metrics.jobs_accepted(workspace, jobs)
        if fresh:
            await self._trigger(fresh)
        return ids

    async def replay(self, workspace: str, letters: Sequence[tuple[str, Job]]) -> list[str]:
        """Queue dead letters' jobs again, deleting each letter; returns the ids replayed.

        A letter already gone (replayed or purged meanwhile) is skipped, so concurrent
        replays of the same letters queue each job once (``lua/replay.lua``).
        """
        shards = self.settings.shards
        position: dict[keys.ShardKeys, int] = {}
        args: list[Any] = [self.settings.trigger_ttl_ms]
        for letter_id, job in letters:
            shard = keys.shard_keys(workspace, shard_for(workspace, job.route, shards), job.lane)
            spot = position.setdefault(shard, len(position) + 1)
            args += (letter_id, spot, job.field, job.payload)
        lua_keys = [keys.dead_letters(workspace)]
        lua_keys += [shard.stream for shard in position]
        lua_keys += [shard.trigger for shard in position]
        result: list[Any] = await self._durably(self._replay(keys=lua_keys, args=args))
        count = int(result[0])
        replayed = [i.decode() if isinstance(i, bytes) else str(i) for i in result[1 : count + 1]]
        done = set(replayed)
        metrics.jobs_accepted(workspace, [job for letter_id, job in letters if letter_id in done])
        await self._trigger_fresh(list(position), result[count + 1 :])
        return replayed

    async def enqueue_once(
        self,
        workspace: str,
        jobs: Sequence[Job],
        *,
        key: str,
        answer: bytes,
        window_ms: int,
        traffic: Traffic = Traffic.LIVE,
    ) -> bytes | None:
        """Store `jobs` and `answer` (under `key`, for `window_ms`) in one transaction.

        Returns None when stored, or the answer already under `key`, storing nothing. The
        key is WATCHed from the check to EXEC, so of two concurrent repeats the second's
        EXEC aborts and it returns the first's answer instead of queuing the jobs again.
        """
        with store_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(key)
                        first = await pipe.get(key)
                        if first is not None:
                            return first.encode() if isinstance(first, str) else first
                        pipe.multi()  # type: ignore[no-untyped-call]
                        touched = self._stage(pipe, workspace, jobs, traffic)
                        pipe.set(key, answer, px=window_ms)
                        results = await self._execute(pipe)
                        break
                    except redis.WatchError:
                        continue
        metrics.jobs_accepted(workspace, jobs)
        await self._trigger_fresh(touched, results[len(jobs) : len(jobs) + len(touched)])
        return None

    def _stage(
        self, pipe: Pipeline, workspace: str, jobs: Sequence[Job], traffic: Traffic
    ) -> list[keys.ShardKeys]:
        """Queue the XADDs, then the shards' trigger markers; returns the shards touched."""
        shards = self.settings.shards
        order = [
            keys.shard_keys(workspace, shard_for(workspace, job.route, shards), job.lane, traffic)
            for job in jobs
        ]
        for job, shard in zip(jobs, order, strict=True):
            pipe.xadd(shard.stream, {job.field: job.payload})
        touched = list(dict.fromkeys(order))
        for shard in touched:
            pipe.set(shard.trigger, 1, nx=True, px=self.settings.trigger_ttl_ms)
        return touched

    async def _execute(self, pipe: Pipeline) -> list[Any]:
        results: list[Any] = await self._durably(pipe.execute())
        return results

    async def _durably(self, write: Awaitable[T]) -> T:
        """`write`'s result once Redis applied it (and, at the fsync level, on disk).

        Store trouble becomes StoreUnavailable; a WATCH conflict is the caller's to retry.
        """
        with store_errors():
            result = await write
            if self.use_waitaof:
                await self._wait_fsync()
        return result

    async def _trigger_fresh(self, touched: list[keys.ShardKeys], flags: list[Any]) -> None:
        """Trigger the shards whose debounce marker this write set (`flags` follow `touched`)."""
        fresh = [s for s, was_set in zip(touched, flags, strict=True) if was_set]
        if fresh:
            await self._trigger(fresh)

    async def _wait_fsync(self) -> None:
        local, _ = await self.redis.execute_command("WAITAOF", 1, 0, 5000)  # type: ignore[no-untyped-call]
        if int(local) < 1:
            raise StoreUnavailable("WAITAOF: the write was not fsynced to the AOF in time")

    async def _trigger(self, shards: list[keys.ShardKeys]) -> None:
        if self.triggers is None:
            return
        countdown_s = self.settings.linger_ms / 1000
        try:
            await asyncio.to_thread(self._send_all, shards, countdown_s)
        except Exception:  # the job is stored; the sweeper re-sends lost triggers
            log.warning("drain trigger failed; the sweeper will pick the shard up", exc_info=True)

    def _send_all(self, shards: list[keys.ShardKeys], countdown_s: float) -> None:
        assert self.triggers is not None
        for shard in shards:
            self.triggers.send(
                shard.workspace,
                shard.shard,
                lane=shard.lane,
                traffic=shard.traffic,
                countdown_s=countdown_s,
            )

    async def ping(self) -> bool:
        try:
            with store_errors():
                return bool(await self.redis.ping())
        except StoreUnavailable:
            return False
