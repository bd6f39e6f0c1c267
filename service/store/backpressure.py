"""Backpressure: refuse new work while a workspace's backlog is over a high-water mark.

Two marks per workspace: how many entries wait in its shard streams
(``CIOQ_BACKLOG_MAX_ENTRIES``) and how old the oldest one is (``CIOQ_BACKLOG_MAX_AGE_S``).
Over either, ingest answers 503 with ``Retry-After`` and accepts again by itself once the
workers have drained below it. Producers back off instead of growing Redis without bound.

The reading costs one Lua call (``XLEN`` and the first entry id of every shard stream,
and ``TIME``; in cluster mode a pipeline of both per stream) and is cached per workspace
for ``CIOQ_BACKLOG_REFRESH_MS``, so the hot path is a dictionary lookup. A failed
reading is cached as well: while Redis is unreachable, ingest answers 503 at once
instead of waiting on a socket timeout per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from service import keys
from service.config import BacklogSettings, QueueSettings, Workspace
from service.errors import FieldError, Overloaded, StoreUnavailable
from service.jobs import Traffic
from service.store.connections import AsyncStore, lua_source, store_errors
from service.store.shard_state import ask_fill, stream_fills


@dataclass(frozen=True, slots=True)
class Reading:
    """A workspace's backlog at one moment (`taken_s` on the monotonic clock)."""

    entries: int
    oldest_age_s: float
    taken_s: float


@dataclass(frozen=True, slots=True)
class _Failure:
    message: str
    taken_s: float


class Backpressure:
    """Cached backlog readings per workspace, judged against the high-water marks."""

    def __init__(
        self,
        client: AsyncStore,
        backlog: BacklogSettings,
        queue: QueueSettings,
        workspaces: tuple[Workspace, ...],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = client
        self.backlog = backlog
        self.shards = queue.shards
        self.lanes = {ws.name: ws.lanes for ws in workspaces}
        self.clock = clock
        self._last: dict[str, Reading | _Failure] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # EVAL with the source, not EVALSHA: a reading is taken twice a second at most, and
        # it cannot fail with NOSCRIPT after a SCRIPT FLUSH or a failover.
        cluster = isinstance(client, AsyncRedisCluster)
        self._script = None if cluster else lua_source("backlog")

    async def check(self, workspace: str) -> None:
        """Return if `workspace` may take more work; raise Overloaded or StoreUnavailable."""
        found = await self.reading(workspace)
        marks = self.marks_crossed(found)
        if marks:
            raise Overloaded(marks[0], self.backlog.backlog_retry_after_s)

    async def reading(self, workspace: str) -> Reading:
        """The cached reading, refreshed when older than `backlog_refresh_ms`."""
        last = self._fresh(workspace)
        if last is None:
            lock = self._locks.setdefault(workspace, asyncio.Lock())
            async with lock:  # one refresh at a time; the rest use its result
                last = self._fresh(workspace)
                if last is None:
                    last = await self._refresh(workspace)
        if isinstance(last, _Failure):
            raise StoreUnavailable(last.message)
        return last

    def marks_crossed(self, found: Reading) -> list[FieldError]:
        """The marks `found` is over, as the field errors of the 503 body."""
        s = self.backlog
        crossed: list[FieldError] = []
        if found.entries > s.backlog_max_entries:
            crossed.append(
                FieldError(
                    "backlog.entries",
                    "max_entries",
                    f"the workspace's backlog holds {found.entries} entries, over the "
                    f"high-water mark of {s.backlog_max_entries}; retry later",
                    limit=s.backlog_max_entries,
                    actual=found.entries,
                )
            )
        if found.oldest_age_s > s.backlog_max_age_s:
            crossed.append(
                FieldError(
                    "backlog.oldest_age_s",
                    "max_age_s",
                    f"the workspace's oldest waiting entry is {found.oldest_age_s:.0f} s old, "
                    f"over the high-water mark of {s.backlog_max_age_s:g} s; retry later",
                    limit=int(s.backlog_max_age_s),
                    actual=int(found.oldest_age_s),
                )
            )
        return crossed

    def _fresh(self, workspace: str) -> Reading | _Failure | None:
        last = self._last.get(workspace)
        if last is None:
            return None
        age_ms = (self.clock() - last.taken_s) * 1000
        return last if age_ms < self.backlog.backlog_refresh_ms else None

    async def _refresh(self, workspace: str) -> Reading | _Failure:
        # Every lane's streams count, live and bulk: the marks bound the whole backlog.
        streams = [
            keys.shard_keys(workspace, shard, lane, traffic).stream
            for lane in self.lanes[workspace]
            for traffic in Traffic
            for shard in range(self.shards)
        ]
        taken_s = self.clock()
        try:
            try:
                entries, oldest_ms, now_ms = await self._read(streams)
            except StoreUnavailable:
                # A read, so a second try cannot apply anything twice: a Redis killed while
                # the reading was on the wire closed its connection (ci-fresh on f0b92d2: two
                # producers got a 503 from it), and the new connection rides out the outage.
                entries, oldest_ms, now_ms = await self._read(streams)
        except StoreUnavailable as exc:
            failure = _Failure(f"backlog reading failed: {exc}", taken_s)
            self._last[workspace] = failure
            return failure
        oldest_ms = now_ms if oldest_ms < 0 else min(oldest_ms, now_ms)
        reading = Reading(entries, (now_ms - oldest_ms) / 1000, taken_s)
        self._last[workspace] = reading
        return reading

    async def _read(self, streams: list[str]) -> tuple[int, int, int]:
        """Entries, the oldest head's ms and Redis's clock in ms, over `streams`."""
        with store_errors():
            if self._script is None:
                return await self._read_per_key(streams)
            # One script instead of two commands per stream: with three lanes, two traffic
            # classes and 32 shards that was 384 replies to parse, twice a second, in the
            # event loop every request of the workspace waited on.
            found = await self.redis.eval(self._script, len(streams), *streams)
            entries, oldest_ms, now_ms = (int(v) for v in found)
            return entries, oldest_ms, now_ms

    async def _read_per_key(self, streams: list[str]) -> tuple[int, int, int]:
        """The cluster's reading: a stream per slot, so two commands per stream."""
        pipe = self.redis.pipeline(transaction=False)
        ask_fill(pipe, streams)
        # TIME apart: a cluster pipeline refuses keyless commands.
        seconds, micros = await self.redis.time()
        fills = stream_fills(await pipe.execute())
        heads = [fill.oldest_ms for fill in fills if fill.oldest_ms is not None]
        oldest_ms = min(heads) if heads else -1
        entries = sum(fill.length for fill in fills)
        return entries, oldest_ms, int(seconds) * 1000 + int(micros) // 1000
