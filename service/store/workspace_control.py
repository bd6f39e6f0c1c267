"""Operator control of a workspace's lanes: manual pause and resume, and the audit list.

A manual pause is the pause the drain already honours: `keys.pause`, which every drain
reads (`ShardStore.pause_remaining_ms`) before it sends, and whose TTL is the time left.
Its value names the cause (``manual``; the drain writes ``throttle`` or ``setup:<status>``),
so a manual pause needs a duration like the others; the reason and who set it sit in a
note beside it that expires with it. Resume deletes whatever pause is set and triggers
the shards that have work, since a paused drain's own re-trigger may be a minute away.

Every operator action (pause, resume, replay, purge, repair) is appended to one audit stream,
capped at `AUDIT_MAX_ENTRIES`, so the console and the CLI can say who did what, when.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

from service import keys
from service.config import QueueSettings
from service.errors import FieldError, InvalidRequest
from service.jobs import Lane, Traffic, find_lane, registered_lanes
from service.store.connections import AsyncStore, lua_source, store_errors
from service.store.shards import PauseCause
from service.stream_ids import id_ms

#: The built-in lanes, as the console offers them; each can be paused on its own (so can
#: any registered lane, by name).
LANES = tuple(lane.value for lane in Lane)
AUDIT_MAX_ENTRIES = 10_000
MAX_PAUSE_MS = 7 * 86_400_000
_DURATION = re.compile(r"^(\d+)\s*(s|m|h|d)$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class TriggerSender(Protocol):
    def send(
        self,
        workspace: str,
        shard: int,
        *,
        lane: Lane,
        traffic: Traffic = Traffic.LIVE,
        countdown_s: float = 0.0,
    ) -> None: ...


def check_lane(lane: str) -> Lane:
    found = find_lane(lane)
    if found is None:
        names = ", ".join(registered_lanes())
        raise InvalidRequest.of("lane", "unknown", f"lanes are {names}")
    return found


def pause_key(workspace: str, lane: str) -> str:
    """The pause the drain of `lane` honours."""
    return keys.pause(workspace, check_lane(lane))


def parse_duration_ms(text: str, *, field_name: str = "for") -> int:
    """``90s``, ``30m``, ``4h`` or ``7d`` as milliseconds, at most `MAX_PAUSE_MS`."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise InvalidRequest.of(field_name, "duration", "use a duration like 30m, 4h or 2d")
    duration_ms = int(match.group(1)) * _UNIT_MS[match.group(2)]
    if duration_ms > MAX_PAUSE_MS:
        raise InvalidRequest([FieldError(field_name, "max", "a pause lasts at most 7d", "7d")])
    return duration_ms


def duration_text(duration_ms: int) -> str:
    """The largest unit that states `duration_ms` exactly: ``4h``, ``90m``, ``45s``."""
    for unit in ("d", "h", "m"):
        if duration_ms % _UNIT_MS[unit] == 0:
            return f"{duration_ms // _UNIT_MS[unit]}{unit}"
    return f"{duration_ms / 1000:g}s"


def check_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason or len(reason) > 200:
        raise InvalidRequest.of("reason", "length", "give a reason of 1 to 200 characters")
    return reason


@dataclass(frozen=True, slots=True)
class PauseNote:
    """Why an operator paused a lane, who, and when."""

    reason: str
    who: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: str
    at_ms: int
    who: str
    action: str
    workspace: str
    lane: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at_ms": self.at_ms,
            "who": self.who,
            "action": self.action,
            "workspace": self.workspace,
            "lane": self.lane,
            "detail": self.detail,
        }


def _audit_fields(who: str, action: str, workspace: str, lane: str, detail: str) -> Any:
    return {"who": who, "action": action, "workspace": workspace, "lane": lane, "detail": detail}


async def record_audit(
    client: AsyncStore, who: str, action: str, workspace: str, lane: str, detail: str
) -> None:
    """Append one operator action to the audit list (a repair records its own)."""
    with store_errors("workspace control"):
        await client.xadd(
            keys.audit(),
            _audit_fields(who, action, workspace, lane, detail),
            maxlen=AUDIT_MAX_ENTRIES,
            approximate=True,
        )


class WorkspaceControl:
    """Pause, resume and the audit list, over the queue's Redis (asyncio client)."""

    def __init__(
        self, client: AsyncStore, queue: QueueSettings, triggers: TriggerSender | None
    ) -> None:
        self.redis = client
        self.shards = queue.shards
        self.triggers = triggers

    async def pause(
        self, workspace: str, lane: str, *, reason: str, who: str, duration_ms: int
    ) -> None:
        """Stop delivery of `lane` for `workspace` for `duration_ms`, and audit it."""
        reason = check_reason(reason)
        note = keys.pause_note(workspace, lane)
        await self._call(
            self.redis.eval(
                lua_source("manual_pause"),
                2,
                pause_key(workspace, lane),
                note,
                PauseCause.MANUAL,
                duration_ms,
                reason,
                who,
                _now_ms(),
            )
        )
        detail = f"for {duration_text(duration_ms)}: {reason}"
        await self.record(who, "pause", workspace, lane, detail)  # apart: another slot

    async def resume(self, workspace: str, lane: str, *, reason: str, who: str) -> str:
        """Lift any pause of `lane` (manual, 429 or credentials); returns the cause lifted."""
        reason = check_reason(reason)
        key = pause_key(workspace, lane)
        cause_raw = await self._call(self.redis.get(key))
        cause = cause_raw.decode() if cause_raw else "none"
        await self._call(self.redis.delete(key, keys.pause_note(workspace, lane)))
        await self.record(who, "resume", workspace, lane, f"lifted {cause}: {reason}")
        await self._trigger_backlog(workspace, check_lane(lane))
        return cause

    async def note(self, workspace: str, lane: str) -> PauseNote | None:
        raw = await self._call(self.redis.hgetall(keys.pause_note(workspace, lane)))
        if not raw:
            return None
        return PauseNote(
            reason=raw.get(b"reason", b"").decode(),
            who=raw.get(b"who", b"").decode(),
            at_ms=int(raw.get(b"at_ms", b"0")),
        )

    async def record(self, who: str, action: str, workspace: str, lane: str, detail: str) -> None:
        """Append one operator action to the audit list."""
        await record_audit(self.redis, who, action, workspace, lane, detail)

    async def audit_list(self, limit: int = 200) -> list[AuditEntry]:
        """The newest `limit` audit entries, newest first."""
        rows = await self._call(self.redis.xrevrange(keys.audit(), count=limit))
        out: list[AuditEntry] = []
        for raw_id, fields in rows:
            entry_id = raw_id.decode()

            def text(name: str, fields: dict[bytes, bytes] = fields) -> str:
                return fields.get(name.encode(), b"").decode()

            out.append(
                AuditEntry(
                    id=entry_id,
                    at_ms=id_ms(entry_id),
                    who=text("who"),
                    action=text("action"),
                    workspace=text("workspace"),
                    lane=text("lane"),
                    detail=text("detail"),
                )
            )
        return out

    async def _trigger_backlog(self, workspace: str, lane: Lane) -> None:
        """Wake a drain for every shard with work; a lost trigger is the sweeper's to resend."""
        if self.triggers is None:
            return
        shards = [
            keys.shard_keys(workspace, shard, lane, traffic)
            for traffic in Traffic
            for shard in range(self.shards)
        ]
        pipe = self.redis.pipeline(transaction=False)
        for shard_keys in shards:
            pipe.xlen(shard_keys.stream)
        lengths = await self._call(pipe.execute())
        due = [shard for shard, length in zip(shards, lengths, strict=True) if length]
        triggers = self.triggers

        def send_all() -> None:
            for shard in due:
                triggers.send(workspace, shard.shard, lane=lane, traffic=shard.traffic)

        if due:
            await asyncio.to_thread(send_all)

    @staticmethod
    async def _call(awaitable: Any) -> Any:
        with store_errors("workspace control"):
            return await awaitable


def _now_ms() -> int:
    return int(time.time() * 1000)
