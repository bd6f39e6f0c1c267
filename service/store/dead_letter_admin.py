"""Operating the dead-letter queue: list, show, replay and purge, with filters.

Shared by ``cioq dlq`` and the admin HTTP API, so both select exactly the same letters.
Replay puts a letter's payload back on its shard unchanged (event ids kept, so
Customer.io drops a replayed event it somehow already has), under a marker named after
the letter, and deletes the letter once its job is confirmed (`Queue.replay`): two
replays of one letter that race, or a retried one, queue it once. Replaying App API
sends and broadcast triggers may deliver them twice (Customer.io may have acted on an
ambiguous one), so on every surface it needs ``may_deliver_twice``.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service import keys
from service.errors import FieldError, InvalidRequest
from service.jobs import Lane, find_lane, job_kind, registered_lanes, restore_job
from service.store import events
from service.store.connections import AsyncStore, store_errors
from service.store.dead_letters import DeadLetter, StoredDeadLetter
from service.store.queue import Queue
from service.store.workspace_control import record_audit

#: Letters read from the stream per round trip, and replayed or purged per Redis call.
PAGE_SIZE = 500

_RELATIVE = re.compile(r"^(\d+)\s*(s|m|h|d)$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_STREAM_ID = re.compile(r"^\d+-\d+$")


def parse_time_ms(value: str, *, field_name: str, now_ms: int | None = None) -> int:
    """Epoch ms, an ISO 8601 time, or an age such as ``30m``/``2h``/``7d`` (before now)."""
    text = value.strip()
    if text.isdigit():
        return int(text)
    match = _RELATIVE.match(text)
    if match:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return now - int(match.group(1)) * _UNIT_MS[match.group(2)]
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            [
                FieldError(
                    field_name,
                    "time",
                    "use epoch milliseconds, ISO 8601 (2026-11-25T10:00:00Z) or an age like 2h",
                )
            ]
        ) from None
    if parsed.tzinfo is None:
        raise InvalidRequest.of(field_name, "time", "an ISO 8601 time needs a UTC offset")
    return int(parsed.timestamp() * 1000)


def check_ids(ids: tuple[str, ...]) -> tuple[str, ...]:
    bad = [i for i in ids if not _STREAM_ID.match(i)]
    if bad:
        raise InvalidRequest(
            [FieldError("ids", "format", f"not a dead-letter id (<ms>-<seq>): {bad[0]!r}")]
        )
    return ids


#: Filter fields as the admin API and the console name them.
FILTER_FIELDS = ("lane", "reason", "class", "op_type", "person", "since", "until", "producer")


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which letters an operation applies to; empty fields match everything."""

    ids: tuple[str, ...] = ()
    lane: Lane | None = None
    reason: str | None = None
    outcome_class: str | None = None
    op_type: str | None = None
    person: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    producer: str | None = None

    def describe(self) -> str:
        """The selection in words, for the audit: its ids, else the fields set."""
        if self.ids:
            return f"ids {', '.join(self.ids)}"
        named = [
            f"{name}={value}"
            for name, value in (
                ("lane", self.lane),
                ("reason", self.reason),
                ("class", self.outcome_class),
                ("op_type", self.op_type),
                ("person", self.person),
                ("since_ms", self.since_ms),
                ("until_ms", self.until_ms),
                ("producer", self.producer),
            )
            if value is not None
        ]
        return ", ".join(named) or "every letter"

    @classmethod
    def from_fields(cls, values: dict[str, Any], ids: tuple[str, ...] = ()) -> DeadLetterFilter:
        """A filter from query parameters or a JSON body; field names as the API shows them."""
        known = {*FILTER_FIELDS, "ids", "all", "dry_run", "limit", "after", MAY_DELIVER_TWICE}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidRequest(
                [FieldError(unknown[0], "unknown_field", "not a dead-letter filter")]
            )
        for name in FILTER_FIELDS:
            value = values.get(name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidRequest.of(name, "type", f"{name} must be a non-empty string")
        return cls.parse(
            ids=ids,
            lane=values.get("lane"),
            reason=values.get("reason"),
            outcome_class=values.get("class"),
            op_type=values.get("op_type"),
            person=values.get("person"),
            since=values.get("since"),
            until=values.get("until"),
            producer=values.get("producer"),
        )

    @classmethod
    def parse(
        cls,
        *,
        ids: tuple[str, ...] = (),
        lane: str | None = None,
        reason: str | None = None,
        outcome_class: str | None = None,
        op_type: str | None = None,
        person: str | None = None,
        since: str | None = None,
        until: str | None = None,
        time_fields: tuple[str, str] = ("since", "until"),
        producer: str | None = None,
    ) -> DeadLetterFilter:
        """A filter from an operator's text; InvalidRequest naming `time_fields` or ``ids``."""

        def when(value: str | None, field_name: str) -> int | None:
            return None if value is None else parse_time_ms(value, field_name=field_name)

        lanes = tuple(str(each) for each in registered_lanes())
        if lane is not None and lane not in lanes:
            raise InvalidRequest.of("lane", "one_of", f"lane must be one of {', '.join(lanes)}")
        return cls(
            ids=check_ids(ids),
            lane=None if lane is None else find_lane(lane),
            reason=reason,
            outcome_class=outcome_class,
            op_type=op_type,
            person=person,
            since_ms=when(since, time_fields[0]),
            until_ms=when(until, time_fields[1]),
            producer=producer,
        )

    @property
    def is_empty(self) -> bool:
        return not self.ids and all(
            v is None
            for v in (
                self.lane,
                self.reason,
                self.outcome_class,
                self.op_type,
                self.person,
                self.since_ms,
                self.until_ms,
                self.producer,
            )
        )

    def matches(self, stored: StoredDeadLetter) -> bool:
        letter = stored.letter
        return (
            (not self.ids or stored.id in self.ids)
            and (self.lane is None or stored.lane is self.lane)
            and (self.reason is None or letter.reason == self.reason)
            and (self.outcome_class is None or letter.outcome_class == self.outcome_class)
            and (self.op_type is None or stored.op_type == self.op_type)
            and (self.person is None or self.person in stored.subjects())
            and (self.producer is None or letter.producer == self.producer)
        )


@dataclass(slots=True)
class Page:
    letters: list[StoredDeadLetter]
    next_after: str | None


@dataclass(slots=True)
class SelectionResult:
    """What a replay or purge matched and, unless it was a dry run, acted on."""

    matched: int = 0
    done: int = 0
    dry_run: bool = False
    ids: list[str] = field(default_factory=list)
    #: How many matched letters are App API sends or broadcast triggers.
    sends: int = 0
    #: Matched letters of forgotten people: deleted, never sent (replay only).
    dropped: int = 0


#: The field (admin API), form input (console) that confirms replaying App sends.
MAY_DELIVER_TWICE = "may_deliver_twice"


def sends_unconfirmed(sends: int) -> InvalidRequest:
    """The refusal of a replay of App sends that was not confirmed."""
    return InvalidRequest.of(
        MAY_DELIVER_TWICE,
        "required",
        f"{sends} of the selected letters are App API sends or broadcast triggers; "
        "Customer.io may already have sent them (check its message log): replaying may "
        f"deliver them twice. Confirm with {MAY_DELIVER_TWICE}",
        status=409,
    )


class DeadLetterAdmin:
    """The operator's view of a workspace's dead letters."""

    def __init__(self, client: AsyncStore, queue: Queue) -> None:
        self.redis = client
        self.queue = queue

    async def size(self, workspace: str) -> int:
        return int(await self._call(self.redis.xlen(keys.dead_letters(workspace))))

    async def stamp(self, workspace: str) -> tuple[int, bytes | None]:
        """Length and newest id of the stream: equal stamps mean the same letters."""
        stream = keys.dead_letters(workspace)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(stream)
        pipe.xrevrange(stream, count=1)
        length, newest = await self._call(pipe.execute())
        return int(length), newest[0][0] if newest else None

    async def summary(self, workspace: str) -> dict[str, int]:
        """Letter counts by reason."""
        counts: dict[str, int] = {}
        async for stored in self.scan(workspace, DeadLetterFilter()):
            counts[stored.letter.reason] = counts.get(stored.letter.reason, 0) + 1
        return counts

    async def get(self, workspace: str, letter_id: str) -> StoredDeadLetter | None:
        check_ids((letter_id,))
        rows = await self._call(
            self.redis.xrange(keys.dead_letters(workspace), letter_id, letter_id)
        )
        if not rows:
            return None
        raw_id, fields = rows[0]
        return StoredDeadLetter(raw_id.decode(), DeadLetter.from_fields(fields))

    async def page(
        self, workspace: str, flt: DeadLetterFilter, *, limit: int, after: str | None = None
    ) -> Page:
        """Up to `limit` matching letters, oldest first, and where the next page starts."""
        letters: list[StoredDeadLetter] = []
        async for stored in self.scan(workspace, flt, after=after):
            if len(letters) == limit:
                return Page(letters, letters[-1].id)
            letters.append(stored)
        return Page(letters, None)

    async def replay(
        self,
        workspace: str,
        flt: DeadLetterFilter,
        *,
        dry_run: bool,
        may_deliver_twice: bool = False,
        who: str,
    ) -> SelectionResult:
        """Queue matching letters again through the normal path, in their original order;
        audited as `who` unless a dry run.

        Raises InvalidRequest (409) when App sends match and `may_deliver_twice` is False.
        """
        if not dry_run and not may_deliver_twice:
            sends = 0
            async for stored in self.scan(workspace, flt):
                sends += job_kind(stored.letter.kind).at_most_once
            if sends:
                raise sends_unconfirmed(sends)

        dropped = 0

        async def requeue(chunk: list[StoredDeadLetter]) -> int:
            nonlocal dropped
            letters = [(s.id, restore_job(s.letter.kind, s.letter.payload)) for s in chunk]
            producers = {s.id: s.letter.producer for s in chunk}
            done = await self.queue.replay(workspace, letters, producers)
            dropped += len(done.dropped)
            return len(done)

        outcome = await self._in_chunks(workspace, flt, requeue, "replayed", dry_run=dry_run)
        outcome.dropped = dropped
        await self._audit(who, "replay", workspace, flt, outcome)
        return outcome

    async def purge(
        self, workspace: str, flt: DeadLetterFilter, *, dry_run: bool, who: str
    ) -> SelectionResult:
        """Delete matching letters for good; audited as `who` unless a dry run."""
        stream = keys.dead_letters(workspace)

        async def delete(chunk: list[StoredDeadLetter]) -> int:
            return int(await self._call(self.redis.xdel(stream, *(s.id for s in chunk))))

        outcome = await self._in_chunks(workspace, flt, delete, "purged", dry_run=dry_run)
        await self._audit(who, "purge", workspace, flt, outcome)
        return outcome

    async def _audit(
        self, who: str, verb: str, workspace: str, flt: DeadLetterFilter, outcome: SelectionResult
    ) -> None:
        """One audit entry per replay or purge, whichever surface ran it."""
        if outcome.dry_run:
            return
        past = "replayed" if verb == "replay" else "purged"
        detail = f"{past} {outcome.done} of {outcome.matched} matched letters ({flt.describe()})"
        if outcome.dropped:
            detail += f"; {outcome.dropped} of forgotten people deleted unsent"
        await record_audit(self.redis, who, verb, workspace, "", detail)

    async def _in_chunks(
        self,
        workspace: str,
        flt: DeadLetterFilter,
        act: Callable[[list[StoredDeadLetter]], Awaitable[int]],
        action: str,
        *,
        dry_run: bool,
    ) -> SelectionResult:
        """Apply `act` to the matching letters, PAGE_SIZE at a time (not on a dry run)."""
        outcome = SelectionResult(dry_run=dry_run)
        chunk: list[StoredDeadLetter] = []
        async for stored in self.scan(workspace, flt):
            outcome.matched += 1
            outcome.sends += job_kind(stored.letter.kind).at_most_once
            outcome.ids.append(stored.id)
            if dry_run:
                continue
            chunk.append(stored)
            if len(chunk) == PAGE_SIZE:
                outcome.done += await act(chunk)
                chunk = []
        if chunk:
            outcome.done += await act(chunk)
        events.dead_letters_handled(workspace, action, outcome.done)
        return outcome

    async def scan(
        self, workspace: str, flt: DeadLetterFilter, *, after: str | None = None
    ) -> AsyncIterator[StoredDeadLetter]:
        """Matching letters, oldest first; the time range is the XRANGE's (ids are dead times)."""
        stream = keys.dead_letters(workspace)
        low = f"({after}" if after else "-" if flt.since_ms is None else str(flt.since_ms)
        high = "+" if flt.until_ms is None else str(flt.until_ms)
        while True:
            rows = await self._call(self.redis.xrange(stream, low, high, count=PAGE_SIZE))
            for raw_id, fields in rows:
                stored = StoredDeadLetter(raw_id.decode(), DeadLetter.from_fields(fields))
                if flt.matches(stored):
                    yield stored
            if len(rows) < PAGE_SIZE:
                return
            low = f"({rows[-1][0].decode()}"

    @staticmethod
    async def _call(awaitable: Any) -> Any:
        with store_errors("dead-letter queue"):
            return await awaitable
