"""The ingest side of the queue: store accepted jobs durably, then wake a drain.

Every write is cut per shard into one-slot ``lua/enqueue.lua`` parts, sent per node and
confirmed on the connection that wrote them at the durability level
(`service.store.slots`, `service.store.durability`); requests that arrive together share
the round trip (`service.store.group_commit`). Only when every part of a request is
stored and confirmed does ingest answer 2xx. A part that failed leaves the others
stored: a request with an id (its Idempotency-Key, or a dead letter's id on replay)
left a marker in each stored part's slot, so its retry stores only the missing parts.
Triggers are sent afterwards and are debounced per shard; the sweeper recovers lost ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from service import keys
from service.config import QueueSettings, RedisSettings
from service.errors import StoredUnconfirmed, StoreUnavailable
from service.jobs import Job, Traffic, lane_traits
from service.store import events
from service.store.connections import AsyncStore, store_errors
from service.store.durability import Confirmation
from service.store.group_commit import GroupCommit, Stored
from service.store.slots import SlotWriter
from service.store.tombstones import DropPlace, Tombstones
from service.triggers import Trigger, Triggers

#: How often a keyed store is tried when the link breaks and its markers show nothing
#: stored (each try waits for a Redis that is down, up to ``CIOQ_REDIS_OUTAGE_WAIT_S``).
_KEYED_STORE_TRIES = 2

log = logging.getLogger("cioq.queue")

#: Marker ids of dead-letter replays start with this, so they never meet a request's.
REPLAY_PREFIX = "dlq:"


class Replayed(list[str]):
    """The letter ids a replay queued again, and those it `dropped` (a forgotten person's)."""

    def __init__(self, ids: list[str], dropped: list[str]) -> None:
        super().__init__(ids)
        self.dropped = dropped


@dataclass(slots=True)
class HeldTriggers:
    """The drain triggers a request's store took the marker for and left to the caller:
    the api's own App send (`service.lanes.app.inline`) sends the job itself when it can,
    and triggers the shards (`Queue.trigger`) only when it does not."""

    shards: list[keys.ShardKeys] = field(default_factory=list)
    behind: frozenset[keys.ShardKeys] = frozenset()


class Queue:
    """Durable writes of accepted jobs into their shards' streams."""

    def __init__(
        self,
        client: AsyncStore,
        redis: RedisSettings,
        queue: QueueSettings,
        triggers: Triggers | None,
    ) -> None:
        self.redis = client
        self.linger_ms = queue.linger_ms
        self.triggers = triggers
        self._trigger_wait_s = queue.trigger_wait_ms / 1000
        #: Sends of triggers that outlasted their wait and are still running (the broker is
        #: slow or hangs); while any runs, requests send no triggers of their own.
        self._stalled: set[asyncio.Future[None]] = set()
        self._writer = SlotWriter(
            client, "enqueue", seed_url=redis.redis_url, outage_wait_s=redis.redis_outage_wait_s
        )
        self._group_commit = GroupCommit(self._writer, queue)
        self.tombstones = Tombstones(client)

    @property
    def confirmation(self) -> Confirmation | None:
        """What each write waits for (set by the start-up checks from the durability level)."""
        return self._writer.confirmation

    @confirmation.setter
    def confirmation(self, value: Confirmation | None) -> None:
        self._writer.confirmation = value

    async def enqueue(
        self,
        workspace: str,
        jobs: Sequence[Job],
        *,
        request_id: str | None = None,
        traffic: Traffic = Traffic.LIVE,
        producer: str = "",
        held: HeldTriggers | None = None,
    ) -> int:
        """Store `jobs`; returns how many were stored now. Raises StoreUnavailable.

        With a `request_id`, jobs an earlier try of the same request stored are skipped.
        Bulk jobs go to the workspace's bulk streams. Each entry records its `producer`.
        With `held`, the triggers the store calls for are left there, not sent.
        """
        stored = await self._store(
            workspace, jobs, request_id, traffic, producer=producer, held=held
        )
        return len(stored.jobs)

    async def _store(
        self,
        workspace: str,
        jobs: Sequence[Job],
        request_id: str | None,
        traffic: Traffic,
        marker: bytes = b"1",
        *,
        producer: str = "",
        held: HeldTriggers | None = None,
    ) -> Stored:
        stored = await self._group_commit.store(
            workspace, jobs, request_id, traffic, marker, producer
        )
        events.jobs_accepted(workspace, stored.jobs, producer)
        if stored.fresh:
            if held is not None:
                held.shards, held.behind = stored.fresh, stored.behind
            else:
                await self._trigger(stored.fresh, stored.behind)
        return stored

    def shard_of(self, workspace: str, job: Job, traffic: Traffic) -> keys.ShardKeys:
        """The shard `job` is stored in."""
        return self._group_commit.shards_of(workspace, [job], traffic)[0]

    async def trigger(self, held: HeldTriggers) -> None:
        """Send the triggers a store left in `held` (and forget them)."""
        shards, held.shards = held.shards, []
        if shards:
            await self._trigger(shards, held.behind)

    async def replay(
        self,
        workspace: str,
        letters: Sequence[tuple[str, Job]],
        producers: Mapping[str, str] | None = None,
    ) -> Replayed:
        """Queue dead letters' jobs again, deleting each letter; returns the ids it replayed.

        Each job keeps the producer of its letter (`producers`, by letter id). A letter
        whose job names a forgotten person (a tombstone, `service.store.tombstones`) is
        deleted unsent and counted: every replay surface (console, API, CLI, repair) comes
        through here, so none of them can bring a forgotten person back.

        A letter already gone (replayed or purged) is skipped. Each letter's job is stored
        under a marker named after the letter, so concurrent or retried replays of one
        letter queue its job once; the letter is deleted only once its job is confirmed.
        """
        stream = keys.dead_letters(workspace)
        with store_errors("dead-letter replay"):
            pipe = self.redis.pipeline(transaction=False)
            for letter_id, _ in letters:
                pipe.xrange(stream, letter_id, letter_id)
            found = await pipe.execute()
        present = [(i, job) for (i, job), rows in zip(letters, found, strict=True) if rows]
        forgotten = await self.tombstones.forgotten_jobs(workspace, [job for _, job in present])
        dropped = [i for (i, _), gone in zip(present, forgotten, strict=True) if gone]
        present = [letter for letter, gone in zip(present, forgotten, strict=True) if not gone]
        if dropped:
            with store_errors("dead-letter replay"):
                removed = int(await self.redis.xdel(stream, *dropped))
            await self.tombstones.count_dropped(workspace, DropPlace.REPLAY, removed)
        outcomes = await asyncio.gather(
            *(
                self.enqueue(
                    workspace,
                    [job],
                    request_id=REPLAY_PREFIX + i,
                    producer=(producers or {}).get(i, ""),
                )
                for i, job in present
            ),
            return_exceptions=True,
        )
        queued = [i for (i, _), o in zip(present, outcomes, strict=True) if isinstance(o, int)]
        if queued:
            with store_errors("dead-letter replay"):
                await self.redis.xdel(stream, *queued)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        # A letter whose job a racing (or earlier) replay stored counts as that one's.
        return Replayed(
            [i for (i, _), stored in zip(present, outcomes, strict=True) if stored], dropped
        )

    async def enqueue_once(
        self,
        workspace: str,
        jobs: Sequence[Job],
        *,
        key: str,
        answer: bytes,
        window_ms: int,
        traffic: Traffic = Traffic.LIVE,
        producer: str = "",
        held: HeldTriggers | None = None,
    ) -> bytes | None:
        """Store `jobs` once per `key` and remember `answer` under it for `window_ms`.

        Returns None when stored now, or the first try's answer (its jobs stored, by now or
        by an earlier try whose answer was lost), storing nothing. The key is the request
        id of the parts, and each part's marker keeps the first try's answer, so concurrent
        or retried repeats store each job once and answer alike (the same job id). The
        answer under `key` is a fast path only: its absence does not prove nothing was
        stored, and once the jobs are stored a failure to write it is not an error.
        """
        try:
            with store_errors("idempotency"):
                first = await self.redis.get(key)
        except StoreUnavailable:
            first = None  # the fast path only: the markers below still store it once
        if first is not None:
            return _as_bytes(first)
        request_id = hashlib.sha256(key.encode()).hexdigest()[:32]
        for tries_left in reversed(range(_KEYED_STORE_TRIES)):
            try:
                stored = await self._store(
                    workspace,
                    jobs,
                    request_id,
                    traffic,
                    marker=answer,
                    producer=producer,
                    held=held,
                )
                break
            except StoredUnconfirmed as exc:
                if exc.earlier is not None and exc.earlier != b"1":
                    raise StoredUnconfirmed(str(exc), earlier=exc.earlier) from exc
                raise
            except StoreUnavailable as exc:
                # The link broke (a timeout, a reset): the jobs may be stored. Their
                # markers say; stored, the write is at least unconfirmed, and an App send
                # may say so.
                marker = await self._markers(workspace, jobs, request_id, traffic)
                if marker is not None:
                    earlier = None if marker in (answer, b"1") else marker
                    raise StoredUnconfirmed(str(exc), earlier=earlier) from exc
                # Not stored, or not yet (a write still in flight may land later). Storing
                # again is what the producer's resend with its key would do, and as safe:
                # the markers store each part once whichever try lands first. Done here,
                # a Redis restart that broke the link costs the producer no 503.
                if tries_left == 0:
                    raise
        mine = stored.earlier in (None, b"1")
        remembered = answer if mine else stored.earlier
        assert remembered is not None
        try:
            with store_errors("idempotency"):
                if await self.redis.set(key, remembered, px=window_ms, nx=True):
                    return None if mine else remembered
                first = await self.redis.get(key)
        except StoreUnavailable:
            log.warning("idempotency answer not remembered; the request markers still are")
            return None if mine else remembered
        if mine:
            # This try stored the jobs, so its answer is the first one even when a repeat
            # that found its markers wrote the same answer under the key before it did.
            return None
        return remembered if first is None else _as_bytes(first)

    async def _markers(
        self, workspace: str, jobs: Sequence[Job], request_id: str, traffic: Traffic
    ) -> bytes | None:
        """The marker value when every part of the request is stored, else None."""
        shards = set(self._group_commit.shards_of(workspace, jobs, traffic))
        try:
            with store_errors("idempotency"):
                found = [await self.redis.get(shard.request(request_id)) for shard in shards]
        except StoreUnavailable:
            return None
        first = found[0] if found else None
        if first is None or any(value is None for value in found):
            return None
        return _as_bytes(first)

    async def _trigger(
        self, shards: list[keys.ShardKeys], behind: frozenset[keys.ShardKeys] = frozenset()
    ) -> None:
        if self.triggers is None:
            return
        if self._stalled:
            return  # the broker has not answered the last send: the sweeper sends this one
        send = asyncio.ensure_future(self._send(self.triggers, self._triggers_for(shards, behind)))
        try:
            # Shielded: past the wait the request is answered and the send goes on, so a
            # trigger the broker is only slow to take is not lost.
            await asyncio.wait_for(asyncio.shield(send), self._trigger_wait_s)
        except TimeoutError:
            log.warning(
                "drain triggers not sent within %d ms; answering, and sending no more until "
                "the broker answers (the sweeper triggers the shards)",
                self._trigger_wait_s * 1000,
            )
            self._stalled.add(send)
            send.add_done_callback(self._stalled.discard)

    @staticmethod
    async def _send(triggers: Triggers, batch: list[Trigger]) -> None:
        try:
            await triggers.send_all(batch)
        except Exception:  # the job is stored; the sweeper re-sends lost triggers
            log.warning("drain trigger failed; the sweeper will pick the shard up", exc_info=True)

    def _triggers_for(
        self, shards: list[keys.ShardKeys], behind: frozenset[keys.ShardKeys]
    ) -> list[Trigger]:
        """One trigger per shard. A shard `behind` (its head outwaited the trigger marker,
        so an earlier trigger is still unserved: the workers are down or behind) gets its
        backstop trigger on the bulk queue: while workers were down, writes to a backlog
        sent one live trigger per shard and marker life, and the live events after the
        restart waited in the live queue behind all of them (issue 27).
        """
        linger_s = self.linger_ms / 1000
        triggers = []
        for shard in shards:
            # A batch lane's drain would only wait for its batch to fill; a lone send not.
            batches = lane_traits(shard.lane).batches
            late = shard in behind and batches
            countdown_s = linger_s if batches and not late else 0.0
            triggers.append(
                Trigger(shard.workspace, shard.shard, shard.lane, shard.traffic, late, countdown_s)
            )
        return triggers

    async def aclose(self) -> None:
        """Close the per-node connections of cluster mode (the client is the caller's)."""
        for send in list(self._stalled):
            send.cancel()
        await self._writer.aclose()

    async def ping(self) -> bool:
        try:
            with store_errors():
                return bool(await self.redis.ping())
        except StoreUnavailable:
            return False


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
