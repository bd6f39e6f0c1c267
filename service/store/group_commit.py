"""Group commit: the jobs of ingest requests that arrive together share one round trip.

Under concurrent load a Redis round trip costs the api more CPU than one request's
routing, validation and translation (~30 µs on `service.store.wire`'s connection, ~70
through redis-py's client). Requests that reach `GroupCommit.store` while a call is in
flight wait for the next one, which stores all of them; an idle api still sends each
request's jobs at once.

A call is one ``lua/enqueue.lua`` part per shard touched (one slot each, see
`service.keys`), sent per node as one pipeline and confirmed there (`service.store.slots`).
A request is answered only after every one of its parts is stored and confirmed; if any
part fails the request fails (503), and its parts that were stored stay stored: a request
with an id (its Idempotency-Key) left a marker per part, so its retry stores only the
missing parts. Each request's jobs keep their order. A shard whose trigger marker the
call took is reported fresh to one request only, so it gets one drain trigger; one whose
head had already waited longer than the marker lives is reported `behind` too (an earlier
trigger for it is still unserved: its next one goes to the bulk queue, see `Queue`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service import keys
from service.config import QueueSettings
from service.errors import StoredUnconfirmed
from service.jobs import Job, Traffic, shard_for
from service.store.slots import Part, SlotWriter

#: Jobs one call carries at most (a bigger request goes alone): bounds how long the
#: scripts of one call hold Redis.
MAX_GROUP_JOBS = 1000
#: lua/enqueue.lua's answer when it took the trigger marker of a shard whose head waited
#: longer than the marker lives.
MARKER_SET_BEHIND = 2


@dataclass(frozen=True, slots=True)
class Stored:
    """One request's outcome: the jobs stored now (not by an earlier try), shards to trigger."""

    jobs: list[Job]
    fresh: list[keys.ShardKeys]
    #: The value an earlier try left in its marker (its answer), when one stored a part.
    earlier: bytes | None = None
    #: Of `fresh`, the shards whose head waited past the trigger marker's life.
    behind: frozenset[keys.ShardKeys] = frozenset()


@dataclass(slots=True)
class _Waiter:
    jobs: Sequence[Job]
    shards: list[keys.ShardKeys]
    request_id: str | None
    done: asyncio.Future[Stored]
    marker: bytes = b"1"
    producer: str = ""


class GroupCommit:
    """Stores requests' jobs in their shards' streams, several requests per round trip."""

    def __init__(
        self, writer: SlotWriter, queue: QueueSettings, *, max_jobs: int = MAX_GROUP_JOBS
    ) -> None:
        self._writer = writer
        self._shards = queue.shards
        self._trigger_ttl_ms = queue.trigger_ttl_ms
        self._marker_ttl_ms = int(queue.idempotency_window_s * 1000)
        self._max_jobs = max_jobs
        self._waiting: list[_Waiter] = []
        self._busy = False  # a call is in flight; new requests wait for the next one
        self._flusher: asyncio.Task[None] | None = None  # kept so the task is not collected

    async def store(
        self,
        workspace: str,
        jobs: Sequence[Job],
        request_id: str | None = None,
        traffic: Traffic = Traffic.LIVE,
        marker: bytes = b"1",
        producer: str = "",
    ) -> Stored:
        """Store `jobs` of one request (at most once per `request_id`, when given), in the
        streams of their `traffic` class. `marker` is kept with the request id (the
        request's answer), and a retry's `Stored.earlier` returns it. Each entry records
        `producer` (one argument per request, not per job: the hot path stays as it was).

        Raises StoreUnavailable when any part of the request was not stored and confirmed.
        """
        loop = asyncio.get_running_loop()
        shards = self.shards_of(workspace, jobs, traffic)
        waiter = _Waiter(jobs, shards, request_id, loop.create_future(), marker, producer)
        self._waiting.append(waiter)
        if not self._busy:
            # Nothing in flight: commit in this request's own task, with no hand-off.
            self._busy = True
            try:
                # One turn of the event loop first: the requests whose tasks are already
                # scheduled (read in the same pass over the sockets) join this call
                # instead of waiting for the next.
                await asyncio.sleep(0)
                await self._commit(self._take())
            finally:
                self._hand_off(loop)
        return await waiter.done

    def shards_of(
        self, workspace: str, jobs: Sequence[Job], traffic: Traffic
    ) -> list[keys.ShardKeys]:
        """The shard each job is stored in."""
        return [
            keys.shard_keys(
                workspace, shard_for(workspace, job.route, self._shards), job.lane, traffic
            )
            for job in jobs
        ]

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
        units = _units(group)
        parts = [self._part(group, shard, found) for shard, found in units.items()]
        try:
            results = await self._writer.run(parts)
        except asyncio.CancelledError:
            for waiter in group:
                waiter.done.cancel()
            raise
        except Exception as exc:
            for waiter in group:
                if not waiter.done.done():
                    waiter.done.set_exception(exc)
            return
        _settle(group, units, results)

    def _part(
        self,
        group: list[_Waiter],
        shard_keys: keys.ShardKeys,
        found: list[tuple[int, list[Job]]],
    ) -> Part:
        lua_keys = [shard_keys.stream, shard_keys.trigger]
        args: list[Any] = [self._trigger_ttl_ms, self._marker_ttl_ms]
        for index, jobs in found:
            request_id = group[index].request_id
            if request_id is not None:
                lua_keys.append(shard_keys.request(request_id))
            waiter = group[index]
            args += (0 if request_id is None else waiter.marker, waiter.producer, len(jobs))
            for job in jobs:
                args += (job.field, job.payload)
        return Part(lua_keys, args)


Units = dict[keys.ShardKeys, list[tuple[int, list[Job]]]]


def _units(group: list[_Waiter]) -> Units:
    """Per shard: each waiter's jobs for it, as (waiter index, jobs), in order."""
    units: Units = {}
    for index, waiter in enumerate(group):
        if len(waiter.shards) == 1:  # a single-op request: no per-shard split to make
            units.setdefault(waiter.shards[0], []).append((index, list(waiter.jobs)))
            continue
        mine: dict[keys.ShardKeys, list[Job]] = {}
        for job, shard in zip(waiter.jobs, waiter.shards, strict=True):
            mine.setdefault(shard, []).append(job)
        for shard, jobs in mine.items():
            units.setdefault(shard, []).append((index, jobs))
    return units


def _settle(group: list[_Waiter], units: Units, results: list[Any]) -> None:
    """Answer each waiter: failed if any of its parts failed, else what it stored."""
    failed = _failures(units, results) if any(_is_error(r) for r in results) else {}
    stored: dict[int, list[Job]] = {}
    fresh: dict[int, list[keys.ShardKeys]] = {}
    earlier: dict[int, bytes] = {}
    behind: set[keys.ShardKeys] = set()
    for (shard, found), result in zip(units.items(), results, strict=True):
        if _is_error(result):
            continue
        for (index, jobs), now in zip(found, result, strict=False):
            if type(now) is int:  # the common answer: 1, stored now
                if now:
                    stored.setdefault(index, []).extend(jobs)
            else:  # the marker's value: an earlier try stored it
                value = _marker_value(now)
                if value is not None:
                    earlier.setdefault(index, value)
        marker = int(result[-1])
        ok = [index for index, _ in found if index not in failed]
        if marker and ok:  # else the sweeper triggers it
            fresh.setdefault(ok[0], []).append(shard)
            if marker == MARKER_SET_BEHIND:
                behind.add(shard)
    for index, waiter in enumerate(group):
        if waiter.done.done():
            continue
        if index in failed:
            waiter.done.set_exception(failed[index])
        else:
            mine = fresh.get(index, [])
            waiter.done.set_result(
                Stored(
                    stored.get(index, []),
                    mine,
                    earlier.get(index),
                    frozenset(behind.intersection(mine)) if behind else frozenset(),
                )
            )


def _is_error(result: Any) -> bool:
    return isinstance(result, BaseException)


def _failures(units: Units, results: list[Any]) -> dict[int, BaseException]:
    """Each failed request's error: an unconfirmed part says what each request met."""
    failed: dict[int, BaseException] = {}
    for found, result in zip(units.values(), results, strict=True):
        if isinstance(result, StoredUnconfirmed):
            for (index, _), now in zip(found, result.reply, strict=False):
                earlier = _marker_value(now)
                failed.setdefault(index, StoredUnconfirmed(str(result), earlier=earlier))
        elif isinstance(result, BaseException):
            for index, _ in found:
                failed.setdefault(index, result)
    return failed


def _marker_value(reply: Any) -> bytes | None:
    """What an earlier try left in a request's marker, or None if this one stored it."""
    if isinstance(reply, bytes):
        return reply
    return reply.encode() if isinstance(reply, str) else None
