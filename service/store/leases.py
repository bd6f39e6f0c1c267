"""A drain's lease on a shard: every write it makes is fenced by the lease's token.

`ShardStore` (`service.store.shards`) grants leases; a `Lease` renews, releases and
resolves its shard, counts failed attempts, and notes a send before it goes out (the
crash search's in-flight note), each in a Lua script that checks the token first.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from service import keys
from service.delivery.crash_search import InflightNote
from service.delivery.outcomes import SlotRequest
from service.errors import LeaseLost, StoreUnavailable
from service.store import durability
from service.store.connections import SyncStore, queue_by_sha, store_errors
from service.store.durability import Confirmation
from service.stream_ids import next_id


class FencedStore(Protocol):
    """What a lease uses of the store that granted it (`service.store.shards.ShardStore`)."""

    redis: SyncStore
    confirmation: Confirmation | None
    _renew: Script
    _release: Script
    _resolve: Script
    _attempt: Script
    _inflight: Script
    _clear_inflight: Script

    def _call(self, script: Script, lua_keys: list[str], args: list[Any]) -> Any: ...


@dataclass(frozen=True, slots=True)
class Lease:
    """One drain's hold on a shard: the shard's keys and the lease's fencing token.

    Every write through a lease is fenced by its token in Lua, and each method raises
    `LeaseLost` when the script finds another holder, so the drain cannot act on a shard
    it no longer owns.
    """

    store: FencedStore
    shard: keys.ShardKeys
    token: int
    lease_ms: int

    def renew(self) -> None:
        """Extend the lease by `lease_ms` from now."""
        if not self.store._call(self.store._renew, [self.shard.lease], [self.token, self.lease_ms]):
            raise LeaseLost(self.shard.tag)

    def release(self, *, marker_ms: int = 0) -> int:
        """Give the lease back; returns how many entries are still queued.

        `marker_ms` > 0 keeps the trigger marker that long (a re-trigger is scheduled).
        A lease already lost releases nothing and raises nothing: it is not ours to free.
        """
        lua_keys = [self.shard.lease, self.shard.trigger, self.shard.stream]
        return int(self.store._call(self.store._release, lua_keys, [self.token, marker_ms]))

    def resolve(self, last_id: bytes) -> int:
        """Delete the head up to and including `last_id`; returns how many were deleted."""
        return self._fenced(self.store._resolve, *self.resolve_call(last_id))

    def resolve_call(self, last_id: bytes) -> tuple[list[Any], list[Any]]:
        """The resolve script's keys and arguments (`ShardStore.resolve_many` batches them)."""
        lua_keys = [self.shard.stream, self.shard.lease, self.shard.retry]
        return lua_keys, [self.token, next_id(last_id)]

    def record_attempt(self, *, head: bytes, now_ms: int, not_before_ms: int, label: str) -> int:
        """Count a failed attempt at `head`; returns the attempt count."""
        lua_keys = [self.shard.retry, self.shard.lease, self.shard.inflight]
        args = [self.token, head, now_ms, not_before_ms, label]
        return self._fenced(self.store._attempt, lua_keys, args)

    def mark_inflight(self, note: InflightNote, *, slot: SlotRequest | None = None) -> None:
        """Note the send about to go out (crash search reads it after a death), confirmed
        at the workspace's durability level before the POST (audit F5).

        A note the level does not vouch for could vanish in a failover or a restart
        while the send happens, and the next drain would send again. So when it cannot
        be confirmed the send does not go out: the note is cleared, fenced (nothing was
        sent, so there is nothing ambiguous), and StoreUnavailable raised. Should the
        clear fail too, the next drain finds the note and dead-letters the send as
        ambiguous: never sent twice, at worst not sent at all.
        """
        args = [self.token, note.head, note.count, note.lone_crashes, note.suspect_last or b""]
        lua_keys = [self.shard.inflight, self.shard.lease]
        confirming = self.store.confirmation is not None and self.store.confirmation.needed
        if (
            slot is not None
            and not confirming
            and not isinstance(self.store.redis, redis.RedisCluster)
        ):
            return self._mark_with_slot(lua_keys, args, slot)
        try:
            with store_errors("noting a send"):
                result = int(
                    durability.run_confirmed(
                        self.store.redis,
                        self.store.confirmation,
                        self.store._inflight,
                        lua_keys,
                        args,
                    )
                )
        except StoreUnavailable:
            with contextlib.suppress(StoreUnavailable, LeaseLost):
                self.clear_inflight()
            raise
        if result < 0:
            raise LeaseLost(self.shard.tag)

    def _mark_with_slot(self, lua_keys: list[Any], args: list[Any], slot: SlotRequest) -> None:
        """The note and the job's slot request in one round trip (the note first, as the
        send's own order has it). The note unconfirmed (the `write` level) is all a send
        needs here; a note that failed raises as `mark_inflight` does."""
        pipe = self.store.redis.pipeline(transaction=False)
        queue_by_sha(pipe, self.store._inflight, lua_keys, args)
        slot.queue(pipe)
        try:
            with store_errors("noting a send"):
                noted, reply = pipe.execute(raise_on_error=False)
        except StoreUnavailable:
            # The note may or may not be there: clear it, as `mark_inflight` does, so
            # the next drain sends the job instead of dead-lettering it as ambiguous.
            with contextlib.suppress(StoreUnavailable, LeaseLost):
                self.clear_inflight()
            raise
        slot.take(reply)
        if isinstance(noted, NoScriptError):
            noted = self.store._call(self.store._inflight, lua_keys, args)
        if isinstance(noted, Exception):
            with contextlib.suppress(StoreUnavailable, LeaseLost):
                self.clear_inflight()
            with store_errors("noting a send"):
                raise noted
        if int(noted) < 0:
            raise LeaseLost(self.shard.tag)

    def clear_inflight(self) -> None:
        """Forget the note of the last send: it got an answer, or the shard is handed over."""
        lua_keys = [self.shard.inflight, self.shard.lease]
        self._fenced(self.store._clear_inflight, lua_keys, [self.token])

    @property
    def fence(self) -> tuple[str, int]:
        """(lease key, token): what a write elsewhere checks to be fenced by this lease."""
        return self.shard.lease, self.token

    def _fenced(self, script: Script, lua_keys: list[str], args: list[Any]) -> int:
        """Run a fenced script; its -1 means another holder took the shard."""
        result = int(self.store._call(script, lua_keys, args))
        if result < 0:
            raise LeaseLost(self.shard.tag)
        return result
