"""The drain side of a shard: lease, read, resolve, retry state. Synchronous redis-py.

Only the lease holder changes a shard, and every change is fenced by its token in a Lua
script, so a worker that lost its lease (paused, partitioned, presumed dead) cannot
delete or dead-letter what the next holder is working on. Delivery always works on
the stream's head: a resolved batch is a prefix, removed with one ``XTRIM MINID``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from service import keys
from service.delivery.crash_search import InflightNote
from service.delivery.outcomes import PendingWrite
from service.errors import LeaseLost, StoreUnavailable
from service.jobs import PRODUCER_FIELD, JobKind, Lane, Traffic, job_kinds_by_field
from service.store.connections import (
    STORE_ERRORS,
    SyncStore,
    load_script,
    queue_by_sha,
    store_errors,
)
from service.store.durability import Confirmation
from service.store.leases import Lease
from service.store.shard_state import ShardLook, look_at
from service.stream_ids import id_ms

log = logging.getLogger("cioq.store")


class PauseCause(StrEnum):
    """Why a workspace's lane is paused: the pause key's value (`keys.pause`).

    A setup pause stores its status too (``setup:401``); `of` reads either form back.
    """

    #: Customer.io answered 429.
    THROTTLE = "throttle"
    #: Customer.io refused the lane's credentials or URL (401/403/404).
    SETUP = "setup"
    #: An operator paused it (`service.store.workspace_control`).
    MANUAL = "manual"
    #: A value no cause writes (for labels; never stored).
    OTHER = "other"

    def stored(self, status: int | None = None) -> str:
        """The pause key's value: the cause, and the status that set it when there is one."""
        return self.value if status is None else f"{self.value}:{status}"

    @classmethod
    def of(cls, stored: str) -> PauseCause:
        """The cause of a stored pause value; OTHER for one no cause writes."""
        name = stored.partition(":")[0]
        return cls(name) if name in cls._value2member_map_ else cls.OTHER


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry: its id (``<ms>-<seq>``), kind, payload bytes, shard, and the
    producer whose ingest key sent it (empty for entries stored without one)."""

    id: bytes
    kind: str
    payload: bytes
    shard: keys.ShardKeys
    producer: str = ""

    @property
    def accepted_ms(self) -> int:
        return id_ms(self.id)


@dataclass(frozen=True, slots=True)
class RetryState:
    head: bytes | None
    attempts: int
    first_ms: int
    not_before_ms: int
    history: tuple[tuple[int, str], ...]


@dataclass(frozen=True, slots=True)
class Resolved:
    """What `ShardStore.resolve_many` did: entries removed per part, the head read after
    each (None: not read), and the shards whose lease went back with their last entry."""

    counts: list[int]
    heads: list[list[Entry] | None]
    released: set[keys.ShardKeys]


@dataclass(frozen=True, slots=True)
class FirstLook:
    """What a drain reads right after taking its lease, in the same round trip: how long
    its lane stays paused, the shard's retry state, head and in-flight note."""

    pause_ms: int
    retry: RetryState
    head: list[Entry]
    note: InflightNote


def _retry_state(raw: dict[bytes, bytes]) -> RetryState:
    history: list[tuple[int, str]] = []
    for line in raw.get(b"history", b"").decode().splitlines():
        at_ms, _, label = line.partition(" ")
        history.append((int(at_ms), label))
    return RetryState(
        head=raw.get(b"head"),
        attempts=int(raw.get(b"attempts", 0)),
        first_ms=int(raw.get(b"first_ms", 0)),
        not_before_ms=int(raw.get(b"not_before_ms", 0)),
        history=tuple(history),
    )


def _note(raw: dict[bytes, bytes]) -> InflightNote:
    if not raw:
        return InflightNote()
    return InflightNote(
        head=raw.get(b"head"),
        count=int(raw.get(b"count", b"0")),
        lone_crashes=int(raw.get(b"lone", b"0")),
        suspect_last=raw.get(b"suspect") or None,
        answer=raw.get(b"answer"),
    )


def _rows(shard: keys.ShardKeys, rows: Any) -> list[Entry] | None:
    """A pipelined XRANGE's entries, or None when it failed."""
    if isinstance(rows, Exception):
        return None
    kinds = job_kinds_by_field()
    return [_entry(shard, raw_id, fields, kinds) for raw_id, fields in rows]


def _entry(
    shard: keys.ShardKeys,
    raw_id: bytes,
    fields: dict[bytes, bytes],
    kinds: Mapping[bytes, JobKind],
) -> Entry:
    # The job's field (its name says the kind), and the producer's when it has one. A field
    # this version does not know is a later version's addition: read past it, so after a
    # rollback the older workers still deliver what the newer api stored. (The version
    # before this one read exactly one field; docs/deploy.md says what that means.)
    # The drain reads each entry several times (a 4,000-entry buffer per drain, a drain per
    # 0.25 s of a backlog), so the usual entry, the job's field and at most the producer's,
    # is read in one pass with no list built (bench/run --quick --only drain).
    producer = fields.get(PRODUCER_FIELD)
    if len(fields) == (1 if producer is None else 2):
        for name, value in fields.items():
            kind = kinds.get(name)
            if kind is not None:
                return Entry(raw_id, kind.name, value, shard, producer.decode() if producer else "")
    ((kind, payload),) = [(kinds[name], value) for name, value in fields.items() if name in kinds]
    return Entry(raw_id, kind.name, payload, shard, producer.decode() if producer else "")


class ShardStore:
    """Fenced operations on one Redis for the shards a drain works on."""

    def __init__(self, client: SyncStore) -> None:
        self.redis = client
        #: How writes that must survive a failover are confirmed (the in-flight note);
        #: set from the start-up checks' verdict.
        self.confirmation: Confirmation | None = None
        self._acquire: Script = load_script(client, "acquire")
        self._renew: Script = load_script(client, "renew")
        self._release: Script = load_script(client, "release")
        self._resolve: Script = load_script(client, "resolve")
        self._resolve_release: Script = load_script(client, "resolve_release")
        self._attempt: Script = load_script(client, "attempt")
        self._inflight: Script = load_script(client, "inflight")
        self._clear_inflight: Script = load_script(client, "clear_inflight")
        self._end_chain: Script = load_script(client, "end_chain")
        self._pause: Script = load_script(client, "pause")

    def acquire(self, shard: keys.ShardKeys, *, lease_ms: int) -> Lease | None:
        """The shard's lease if it was free, else None."""
        return self.acquire_many([shard], lease_ms=lease_ms)[0]

    def acquire_many(self, shards: list[keys.ShardKeys], *, lease_ms: int) -> list[Lease | None]:
        """Each shard's lease if it was free, else None; one round trip on one Redis.

        redis-py refuses scripts in a cluster pipeline (their shards live in many slots),
        so on a cluster each lease is one call.
        """
        with store_errors("acquiring leases"):
            if isinstance(self.redis, redis.RedisCluster):
                tokens = [
                    int(self._acquire(keys=[shard.lease, shard.fence], args=[lease_ms]))
                    for shard in shards
                ]
            else:
                pipe = self.redis.pipeline(transaction=False)
                for shard in shards:
                    self._acquire(keys=[shard.lease, shard.fence], args=[lease_ms], client=pipe)
                tokens = [int(t) for t in pipe.execute()]
        return [
            Lease(self, shard, token, lease_ms) if token else None
            for shard, token in zip(shards, tokens, strict=True)
        ]

    def acquire_and_look(
        self, shard: keys.ShardKeys, *, lease_ms: int, count: int, pause_key: str
    ) -> tuple[Lease | None, FirstLook | None]:
        """`acquire`, and when it got the lease what the drain reads first (`FirstLook`), in
        one round trip: a lone App send's drain made five. The reads run after the lease
        was taken (one connection, in order), so no other holder changed what they read.
        None for the look on a cluster, or when the script cache was empty (`NOSCRIPT`:
        the lease is then taken on its own and nothing was read)."""
        if isinstance(self.redis, redis.RedisCluster):
            return self.acquire(shard, lease_ms=lease_ms), None
        pipe = self.redis.pipeline(transaction=False)
        queue_by_sha(pipe, self._acquire, [shard.lease, shard.fence], [lease_ms])
        pipe.pttl(pause_key)
        pipe.hgetall(shard.retry)
        pipe.xrange(shard.stream, min="-", max="+", count=count)
        pipe.hgetall(shard.inflight)
        with store_errors("acquiring a lease"):
            token, pause_ttl, retry, rows, note = pipe.execute(raise_on_error=False)
            for reply in (pause_ttl, retry, rows, note):
                if isinstance(reply, Exception):
                    if isinstance(token, int) and token:
                        # The lease is ours: hand it back rather than hold it unused.
                        with contextlib.suppress(StoreUnavailable):
                            Lease(self, shard, token, lease_ms).release()
                    raise reply
            if isinstance(token, NoScriptError):
                return self.acquire(shard, lease_ms=lease_ms), None
            if isinstance(token, Exception):
                raise token
        if not token:
            return None, None
        kinds = job_kinds_by_field()
        look = FirstLook(
            pause_ms=max(int(pause_ttl), 0),
            retry=_retry_state(retry),
            head=[_entry(shard, raw_id, fields, kinds) for raw_id, fields in rows],
            note=_note(note),
        )
        return Lease(self, shard, int(token), lease_ms), look

    def read(self, shard: keys.ShardKeys, *, after: bytes | None, count: int) -> list[Entry]:
        """Up to `count` entries from the head, or after the entry id `after`."""
        return self.read_many([(shard, after, count)])[0]

    def read_many(
        self, wanted: Sequence[tuple[keys.ShardKeys, bytes | None, int]]
    ) -> list[list[Entry]]:
        """`read` for several (shard, after, count), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for shard, after, count in wanted:
            pipe.xrange(shard.stream, min=b"(" + after if after else b"-", max="+", count=count)
        with store_errors("reading shards"):
            found: list[list[tuple[bytes, dict[bytes, bytes]]]] = pipe.execute()
        kinds = job_kinds_by_field()
        return [
            [_entry(shard, raw_id, fields, kinds) for raw_id, fields in rows]
            for (shard, _, _), rows in zip(wanted, found, strict=True)
        ]

    def look(self, shards: list[keys.ShardKeys]) -> list[ShardLook]:
        """Length, lease and retry wait of each shard, in one round trip."""
        return look_at(self.redis, shards)

    def inflight_note(self, shard: keys.ShardKeys) -> InflightNote:
        return self.inflight_notes([shard])[0]

    def inflight_notes(self, shards: list[keys.ShardKeys]) -> list[InflightNote]:
        """Each shard's note of its last send, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in shards:
            pipe.hgetall(shard.inflight)
        with store_errors("reading inflight notes"):
            found: list[dict[bytes, bytes]] = pipe.execute()
        return [_note(raw) for raw in found]

    def retry_state(self, shard: keys.ShardKeys) -> RetryState:
        raw: dict[bytes, bytes] = self._run(lambda: self.redis.hgetall(shard.retry))
        return _retry_state(raw)

    def resolve_many(
        self,
        parts: Sequence[tuple[Lease, bytes]],
        *,
        also: Callable[[Any], None] | None = None,
        peek: int = 0,
        before: PendingWrite | None = None,
    ) -> Resolved:
        """`Lease.resolve` of each (lease, last id), and `also`'s commands (queued on the
        pipeline, best effort: their replies are not read), in one round trip: each
        resolve's count and, with `peek`, up to that many entries of the shard's head
        after it (read under the lease, so as good as the drain's next read; None when
        not read). A resolve the script cache refused (``NOSCRIPT``: it did not run) runs
        again on its own, and its peek is dropped. `before` is written first (a lane's
        record of the success). With `peek`, a resolve that empties its stream also hands
        the lease back and clears the trigger marker (``resolve_release.lua``): the shard
        is then in `Resolved.released` and its peek is empty. On a cluster each is one
        call, `also` runs on its own, nothing is peeked and nothing released."""
        if isinstance(self.redis, redis.RedisCluster):
            return self._resolve_one_by_one(parts, also, before)
        pipe = self.redis.pipeline(transaction=False)
        if before is not None:
            before.queue(pipe)  # one connection, in order: never resolved without it
        script = self._resolve_release if peek else self._resolve
        calls = []
        for lease, last_id in parts:
            lua_keys, args = lease.resolve_call(last_id)
            if peek:
                lua_keys.append(lease.shard.trigger)
            calls.append((script, lua_keys, args))
            queue_by_sha(pipe, script, lua_keys, args)
        if peek:
            for lease, _ in parts:
                pipe.xrange(lease.shard.stream, min="-", max="+", count=peek)
        if also is not None:
            also(pipe)
        with store_errors("resolving"):
            replies = pipe.execute(raise_on_error=False)
        if before is not None:
            written, replies = replies[0], replies[1:]
            if isinstance(written, Exception):
                # The resolves behind it may have run: what is resolved stays resolved
                # (the jobs were delivered); the record is written again on its own.
                log.warning("a success record failed with its resolve (%s); again", written)
                before.run()
        return self._read_resolves(parts, calls, replies, peek=peek)

    def _read_resolves(
        self,
        parts: Sequence[tuple[Lease, bytes]],
        calls: list[tuple[Script, list[Any], list[Any]]],
        replies: list[Any],
        *,
        peek: int,
    ) -> Resolved:
        found = Resolved([], [], set())
        for n, (lease, _) in enumerate(parts):
            reply, stale = replies[n], False
            if isinstance(reply, NoScriptError):
                # It did not run: run it on its own (loading it); its peek ran before it.
                script, lua_keys, args = calls[n]
                reply, stale = self._call(script, lua_keys, args), True
            if isinstance(reply, Exception):
                with store_errors("resolving"):
                    raise reply
            if isinstance(reply, list):  # resolve_release.lua: {removed, released}
                removed, released = int(reply[0]), bool(int(reply[1]))
            elif int(reply) < 0:
                raise LeaseLost(lease.shard.tag)
            else:
                removed, released = int(reply), False
            found.counts.append(removed)
            if released:
                found.released.add(lease.shard)
                found.heads.append([])  # a write after the release triggers a new drain
            elif peek and not stale:
                found.heads.append(_rows(lease.shard, replies[len(parts) + n]))
            else:
                found.heads.append(None)
        return found

    def _resolve_one_by_one(
        self,
        parts: Sequence[tuple[Lease, bytes]],
        also: Callable[[Any], None] | None,
        before: PendingWrite | None,
    ) -> Resolved:
        """`resolve_many` on a cluster: its pipelines refuse scripts."""
        if before is not None:
            before.run()
        found = [lease.resolve(last_id) for lease, last_id in parts]
        if also is not None:
            pipe = self.redis.pipeline(transaction=False)
            also(pipe)
            with contextlib.suppress(*STORE_ERRORS):
                pipe.execute(raise_on_error=False)
        return Resolved(found, [None] * len(parts), set())

    def linger_chain(self, workspace: str, lane: Lane, traffic: Traffic) -> tuple[int, int] | None:
        """The shard lingering for the workspace lane and for how many ms more, or None."""
        key = keys.linger_chain(workspace, lane, traffic)
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(key)
        pipe.pttl(key)
        with store_errors("reading the linger chain"):
            shard, ttl_ms = pipe.execute()
        return None if shard is None else (int(shard), max(int(ttl_ms), 0))

    def set_linger_chain(self, shard: keys.ShardKeys, *, duration_ms: int) -> None:
        key = keys.linger_chain(shard.workspace, shard.lane, shard.traffic)
        self._run(lambda: self.redis.set(key, shard.shard, px=max(duration_ms, 1)))

    def end_linger_chain(self, shard: keys.ShardKeys) -> None:
        """Forget the chain if `shard` leads it (another drain may have taken over)."""
        key = keys.linger_chain(shard.workspace, shard.lane, shard.traffic)
        self._run(lambda: self._end_chain(keys=[key], args=[shard.shard]))

    def hold_marker(self, shard: keys.ShardKeys, duration_ms: int) -> None:
        """Keep the shard's trigger marker `duration_ms`: a drain is due that covers it."""
        self._run(lambda: self.redis.set(shard.trigger, 1, px=max(duration_ms, 1)))

    def pause_remaining_ms(self, workspace: str, lane: Lane) -> int:
        """How long the workspace's lane stays paused, 0 if it is not."""
        ttl = int(self._run(lambda: self.redis.pttl(keys.pause(workspace, lane))))
        return max(ttl, 0)

    def pause(self, workspace: str, lane: Lane, *, cause: str, duration_ms: int) -> None:
        """Stop every worker from sending to `workspace`'s `lane` for `duration_ms`.

        A longer pause already set (an operator's, or a later Retry-After) stays as it is.
        """
        self._call(self._pause, [keys.pause(workspace, lane)], [cause, max(duration_ms, 1)])

    def _call(self, script: Script, lua_keys: list[str], args: list[Any]) -> Any:
        return self._run(lambda: script(keys=lua_keys, args=args))

    @staticmethod
    def _run(fn: Any) -> Any:
        with store_errors():
            return fn()
