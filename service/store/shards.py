"""The drain side of a shard: lease, read, resolve, retry state. Synchronous redis-py.

Only the lease holder changes a shard, and every change is fenced by its token in a Lua
script, so a worker that lost its lease (paused, partitioned, presumed dead) cannot
delete or dead-letter what the next holder is working on. Delivery always works on
the stream's head: a resolved batch is a prefix, removed with one ``XTRIM MINID``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

from service import keys
from service.delivery.crash_search import InflightNote
from service.errors import StoreUnavailable
from service.jobs import FIELD_OP, FIELD_V1


def load_script(client: Any, name: str) -> Any:
    """Register a Lua script from ``service/store/lua`` on a sync or asyncio client."""
    source = resources.files("service.store").joinpath("lua", f"{name}.lua").read_text()
    return client.register_script(source)


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry: its id (``<ms>-<seq>``), kind and payload bytes."""

    id: bytes
    kind: str
    payload: bytes

    @property
    def accepted_ms(self) -> int:
        return int(self.id.split(b"-", 1)[0])


@dataclass(frozen=True, slots=True)
class RetryState:
    head: bytes | None
    attempts: int
    first_ms: int
    not_before_ms: int
    history: tuple[tuple[int, str], ...]


def next_id(entry_id: bytes) -> bytes:
    """The smallest stream id greater than `entry_id`, for ``XTRIM MINID``."""
    ms, seq = entry_id.split(b"-", 1)
    return ms + b"-" + str(int(seq) + 1).encode()


def _entry(raw_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    op = fields.get(FIELD_OP)
    if op is not None:
        return Entry(raw_id, "v2", op)
    return Entry(raw_id, "v1", fields.get(FIELD_V1, b"null"))


class ShardStore:
    """Fenced operations on one Redis for the shards a drain works on."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._acquire: Script = load_script(client, "acquire")
        self._renew: Script = load_script(client, "renew")
        self._release: Script = load_script(client, "release")
        self._resolve: Script = load_script(client, "resolve")
        self._attempt: Script = load_script(client, "attempt")
        self._inflight: Script = load_script(client, "inflight")

    def acquire(self, shard: keys.ShardKeys, *, lease_ms: int) -> int | None:
        """A fencing token if the shard's lease was free, else None."""
        token = int(self._call(self._acquire, [shard.lease, shard.fence], [lease_ms]))
        return token or None

    def renew(self, shard: keys.ShardKeys, token: int, *, lease_ms: int) -> bool:
        return bool(self._call(self._renew, [shard.lease], [token, lease_ms]))

    def release(self, shard: keys.ShardKeys, token: int, *, marker_ms: int = 0) -> int:
        """Give the lease back; returns how many entries are still queued.

        `marker_ms` > 0 keeps the trigger marker that long (a re-trigger is scheduled).
        """
        lua_keys = [shard.lease, shard.trigger, shard.stream]
        return int(self._call(self._release, lua_keys, [token, marker_ms]))

    def read(self, shard: keys.ShardKeys, *, after: bytes | None, count: int) -> list[Entry]:
        """Up to `count` entries from the head, or after the entry id `after`."""
        start = b"(" + after if after else b"-"
        try:
            rows: list[tuple[bytes, dict[bytes, bytes]]] = self.redis.xrange(  # type: ignore[assignment]
                shard.stream, min=start, max="+", count=count
            )
        except redis.RedisError as exc:
            raise StoreUnavailable(f"reading {shard.stream}: {exc}") from exc
        return [_entry(raw_id, fields) for raw_id, fields in rows]

    def resolve(self, shard: keys.ShardKeys, token: int, last_id: bytes) -> int:
        """Delete the head up to and including `last_id`; -1 if the lease was lost."""
        args = [token, next_id(last_id)]
        lua_keys = [shard.stream, shard.lease, shard.retry]
        return int(self._call(self._resolve, lua_keys, args))

    def record_attempt(
        self,
        shard: keys.ShardKeys,
        token: int,
        *,
        head: bytes,
        now_ms: int,
        not_before_ms: int,
        label: str,
    ) -> int:
        """Count a failed attempt at `head`; returns the attempt count, -1 if lease lost."""
        args = [token, head, now_ms, not_before_ms, label]
        return int(self._call(self._attempt, [shard.retry, shard.lease, shard.inflight], args))

    def inflight_note(self, shard: keys.ShardKeys) -> InflightNote:
        raw: dict[bytes, bytes] = self._run(lambda: self.redis.hgetall(shard.inflight))
        if not raw:
            return InflightNote()
        return InflightNote(
            head=raw.get(b"head"),
            count=int(raw.get(b"count", b"0")),
            lone_crashes=int(raw.get(b"lone", b"0")),
            suspect_last=raw.get(b"suspect") or None,
        )

    def mark_inflight(self, shard: keys.ShardKeys, token: int, note: InflightNote) -> bool:
        """Note the send about to go out; False if the lease was lost."""
        args = [token, note.head, note.count, note.lone_crashes, note.suspect_last or b""]
        return int(self._call(self._inflight, [shard.inflight, shard.lease], args)) == 1

    def clear_inflight(self, shard: keys.ShardKeys) -> None:
        self._run(lambda: self.redis.delete(shard.inflight))

    def retry_state(self, shard: keys.ShardKeys) -> RetryState:
        raw: dict[bytes, bytes] = self._run(lambda: self.redis.hgetall(shard.retry))
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

    def pause_remaining_ms(self, workspace: str) -> int:
        """How long the workspace stays paused, 0 if it is not."""
        ttl = int(self._run(lambda: self.redis.pttl(keys.pause(workspace))))
        return max(ttl, 0)

    def pause(self, workspace: str, *, cause: str, duration_ms: int) -> None:
        """Stop every worker from sending to `workspace` for `duration_ms`."""
        self._run(lambda: self.redis.set(keys.pause(workspace), cause, px=max(duration_ms, 1)))

    def _call(self, script: Script, lua_keys: list[str], args: list[Any]) -> Any:
        return self._run(lambda: script(keys=lua_keys, args=args))

    @staticmethod
    def _run(fn: Any) -> Any:
        try:
            return fn()
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
