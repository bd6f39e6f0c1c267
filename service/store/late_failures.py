"""Late failures as the operator sees them: a record per failure, listed, shown and re-sent.

The poller (`service.lanes.app.late_poll`) writes one record per failure it finds in the
activity log to the workspace's capped stream (`keys.late_failures`), with the job it came
from when the index of delivered jobs (`service.store.sent_index`) knows it, and counts it
in `keys.late_counts` in the same script. `cioq late`, the admin API and the console read
them here, with the dead-letter filters (lane, producer, type, since, until), so every
surface selects the same records.

A re-send queues a corrected copy of a linked job's call again through the normal lanes
(`Queue.enqueue`, like a dead-letter repair): the fix is checked as ingest checks a new call
of its kind (`RepairRules`), keeps the original's ids and accept time where it leaves them
out, keeps its producer, and is stored under a marker named after the record, so two
re-sends that race queue it once; the record then remembers it, and a later re-send is
refused. It is audited with its diff.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from service import keys
from service.errors import FieldError, InvalidRequest
from service.jobs import UNKNOWN_PRODUCER, dumps, find_lane, job_kind, registered_lanes, restore_job
from service.store.connections import AsyncStore, store_errors
from service.store.dead_letter_admin import check_ids, parse_time_ms
from service.store.dead_letter_repair import INVALID_FIX_STATUS, changes
from service.store.queue import Queue
from service.store.sent_index import SentJob
from service.store.workspace_control import record_audit

#: Records read per round trip.
PAGE_SIZE = 500
#: The failure types the poller reads, one walk each (Customer.io's ``type`` takes one).
FAILURE_TYPES = ("failed_attribute_change", "failed_event", "failed_batch_update")
#: A re-send's marker prefix: a record's job is queued once however often it is re-sent.
RESEND_PREFIX = "late-resend:"
#: The lane and producer a record with no linked job counts under (metrics, filters).
UNLINKED = "unlinked"


class LateAction(StrEnum):
    """What an operator did with a late failure (the audit's action)."""

    RESEND = "late_resend"


def build_record(
    workspace: str, activity_type: str, activity: dict[str, Any], job: SentJob | None, now_ms: int
) -> tuple[str, bytes]:
    """A record for the stream and the counts field it adds to (``lane|producer|type``)."""
    data: dict[str, Any] = activity["data"] if isinstance(activity.get("data"), dict) else {}
    record = {
        "activity": activity,
        "type": activity_type,
        "found_ms": now_ms,
        "workspace": workspace,
        "person": _person(activity),
        "reason": str(data.get("reason") or ""),
        "failed_ms": int(activity.get("timestamp") or 0) * 1000,
        "job": None if job is None else job.as_dict(),
    }
    lane = job.lane if job is not None else UNLINKED
    producer = (job.producer or UNKNOWN_PRODUCER) if job is not None else UNLINKED
    return f"{lane}|{producer}|{activity_type}", orjson.dumps(record)


def _person(activity: dict[str, Any]) -> str:
    named = activity.get("customer_identifiers")
    if isinstance(named, dict):
        text = ", ".join(f"{k}={v}" for k, v in named.items() if v not in (None, ""))
        if text:
            return text
    return f"id={activity['customer_id']}" if activity.get("customer_id") else ""


@dataclass(frozen=True, slots=True)
class LateFailure:
    """One stored record (`build_record`'s), with its stream id."""

    id: str
    record: dict[str, Any]
    resent: dict[str, Any] | None = None

    @property
    def job(self) -> dict[str, Any] | None:
        job = self.record.get("job")
        return job if isinstance(job, dict) else None

    @property
    def type(self) -> str:
        return str(self.record.get("type", ""))

    @property
    def lane(self) -> str:
        return str(self.job["lane"]) if self.job else UNLINKED

    @property
    def producer(self) -> str:
        if self.job is None:
            return UNLINKED
        return str(self.job.get("producer") or UNKNOWN_PRODUCER)

    @property
    def failed_ms(self) -> int:
        return int(self.record.get("failed_ms") or 0)

    @property
    def found_ms(self) -> int:
        return int(self.record.get("found_ms") or 0)

    def as_dict(self, *, payload: bool = True) -> dict[str, Any]:
        activity = self.record.get("activity") or {}
        job = self.job
        out: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "person": self.record.get("person", ""),
            "reason": self.record.get("reason", ""),
            "name": activity.get("name", ""),
            "activity_id": activity.get("id", ""),
            "failed_ms": self.failed_ms,
            "found_ms": self.found_ms,
            "linked": job is not None,
            "lane": self.lane,
            "producer": self.producer,
            "job_id": job["id"] if job else None,
            "accepted_ms": job["accepted_ms"] if job else None,
            "delivered_ms": job["delivered_ms"] if job else None,
            "resent": self.resent,
        }
        if payload:
            out["payload"] = job["payload"] if job else None
            out["activity"] = activity
        return out


@dataclass(frozen=True, slots=True)
class LateFilter:
    """Which records to list; empty fields match every record."""

    lane: str | None = None
    producer: str | None = None
    type: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    FIELDS = ("lane", "producer", "type", "since", "until")

    @classmethod
    def parse(
        cls,
        *,
        lane: str | None = None,
        producer: str | None = None,
        type: str | None = None,
        since: str | None = None,
        until: str | None = None,
        time_fields: tuple[str, str] = ("since", "until"),
    ) -> LateFilter:
        lanes = (*(str(each) for each in registered_lanes()), UNLINKED)
        if lane is not None and lane not in lanes:
            raise InvalidRequest.of("lane", "one_of", f"lane must be one of {', '.join(lanes)}")
        if type is not None and type not in FAILURE_TYPES:
            names = ", ".join(FAILURE_TYPES)
            raise InvalidRequest.of("type", "one_of", f"type must be one of {names}")
        if lane is not None and lane != UNLINKED:
            lane = str(find_lane(lane))
        return cls(
            lane=lane,
            producer=producer,
            type=type,
            since_ms=None if since is None else parse_time_ms(since, field_name=time_fields[0]),
            until_ms=None if until is None else parse_time_ms(until, field_name=time_fields[1]),
        )

    @classmethod
    def from_fields(cls, values: dict[str, Any]) -> LateFilter:
        """A filter from query parameters; names as the admin API and console show them."""
        unknown = sorted(set(values) - {*cls.FIELDS, "limit", "after"})
        if unknown:
            raise InvalidRequest.of(unknown[0], "unknown_field", "not a late-failure filter")
        for name in cls.FIELDS:
            value = values.get(name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidRequest.of(name, "type", f"{name} must be a non-empty string")
        return cls.parse(
            lane=values.get("lane"),
            producer=values.get("producer"),
            type=values.get("type"),
            since=values.get("since"),
            until=values.get("until"),
        )

    def matches(self, failure: LateFailure) -> bool:
        if self.lane is not None and failure.lane != self.lane:
            return False
        if self.producer is not None and failure.producer != self.producer:
            return False
        if self.type is not None and failure.type != self.type:
            return False
        # Times are when the failure appeared in the log (Customer.io's timestamp).
        if self.since_ms is not None and failure.failed_ms < self.since_ms:
            return False
        return self.until_ms is None or failure.failed_ms <= self.until_ms


@dataclass(frozen=True, slots=True)
class LatePage:
    failures: list[LateFailure]
    #: Pass as `after` for the next page (older records); None after the last.
    next_after: str | None


def _decode(raw_id: bytes, fields: dict[bytes, bytes]) -> LateFailure:
    return LateFailure(raw_id.decode(), orjson.loads(fields[b"r"]))


async def _call(awaitable: Any) -> Any:
    with store_errors("late failures"):
        return await awaitable


@dataclass(slots=True)
class Resent:
    id: str
    job_id: str
    changes: list[str]


class LateFailures:
    """Reads a workspace's late failures (newest first) and re-sends corrected calls."""

    def __init__(self, client: AsyncStore, queue: Queue | None = None) -> None:
        self.redis = client
        self.queue = queue

    async def _with_resent(self, workspace: str, found: list[LateFailure]) -> list[LateFailure]:
        if not found:
            return found
        with store_errors("late failures"):
            marks = await self.redis.hmget(keys.late_resent(workspace), [f.id for f in found])
        return [
            LateFailure(f.id, f.record, orjson.loads(m) if m else None)
            for f, m in zip(found, marks, strict=True)
        ]

    async def scan(
        self, workspace: str, flt: LateFilter, after: str | None = None
    ) -> AsyncIterator[LateFailure]:
        """Every matching record, newest first, from before `after` when given."""
        end = "+" if after is None else f"({check_ids((after,))[0]}"
        stream = keys.late_failures(workspace)
        while True:
            rows: list[tuple[bytes, dict[bytes, bytes]]] = await _call(
                self.redis.xrevrange(stream, end, "-", count=PAGE_SIZE)
            )
            for raw_id, fields in rows:
                failure = _decode(raw_id, fields)
                if flt.since_ms is not None and failure.found_ms < flt.since_ms:
                    return  # found times only grow along the stream: nothing older matches
                if flt.matches(failure):
                    yield failure
            if len(rows) < PAGE_SIZE:
                return
            end = f"({rows[-1][0].decode()}"

    async def page(
        self, workspace: str, flt: LateFilter, *, limit: int, after: str | None = None
    ) -> LatePage:
        found: list[LateFailure] = []
        more = False
        async for failure in self.scan(workspace, flt, after):
            if len(found) == limit:
                more = True
                break
            found.append(failure)
        found = await self._with_resent(workspace, found)
        return LatePage(found, found[-1].id if more and found else None)

    async def get(self, workspace: str, record_id: str) -> LateFailure | None:
        rid = check_ids((record_id,))[0]
        rows: list[tuple[bytes, dict[bytes, bytes]]] = await _call(
            self.redis.xrange(keys.late_failures(workspace), rid, rid)
        )
        if not rows:
            return None
        return (await self._with_resent(workspace, [_decode(*rows[0])]))[0]

    async def size(self, workspace: str) -> int:
        with store_errors("late failures"):
            return int(await self.redis.xlen(keys.late_failures(workspace)))

    async def counts(self, workspace: str) -> dict[str, int]:
        """Every late failure recorded, ever, by ``lane|producer|type``."""
        raw: dict[bytes, bytes] = await _call(self.redis.hgetall(keys.late_counts(workspace)))
        return {k.decode(): int(v) for k, v in raw.items()}

    async def resend(
        self, workspace: str, record_id: str, payload: Any, *, strict: bool, who: str
    ) -> Resent:
        """Queue `payload` (the corrected call; None: the original as it was) once."""
        assert self.queue is not None, "a re-send needs the queue"
        failure = await self.get(workspace, record_id)
        if failure is None:
            raise InvalidRequest.of("id", "unknown", "no such late failure", status=404)
        job = failure.job
        if job is None:
            raise InvalidRequest.of(
                "id",
                "unlinked",
                "cioq cannot tie this failure to a job: nothing to re-send",
                status=409,
            )
        if failure.resent is not None:
            raise InvalidRequest.of(
                "id", "resent", "this late failure was re-sent already", status=409
            )
        kind = str(job["kind"])
        fixed = _checked(
            kind, job["payload"], job["payload"] if payload is None else payload, strict
        )
        new_job = restore_job(kind, fixed)
        await self.queue.enqueue(
            workspace,
            [new_job],
            request_id=RESEND_PREFIX + failure.id,
            producer=str(job.get("producer") or ""),
        )
        diff = changes(job["payload"], orjson.loads(fixed))
        mark = {"ms": int(time.time() * 1000), "who": who, "changes": diff}
        with store_errors("late failures"):
            first = await self.redis.hsetnx(
                keys.late_resent(workspace), failure.id, orjson.dumps(mark)
            )
        if first:
            detail = f"late failure {failure.id} (job {job['id']}): " + (
                "; ".join(diff) if diff else "no change"
            )
            await record_audit(
                self.redis, who, LateAction.RESEND, workspace, str(job["lane"]), detail[:4000]
            )
        return Resent(failure.id, str(job["id"]), diff)


async def late_by_lane(client: AsyncStore, workspace: str) -> dict[str, int]:
    """Late failures recorded, ever, per lane (``unlinked`` for those tied to no job)."""
    return await _late_by(client, workspace, 0)


async def late_by_producer(client: AsyncStore, workspace: str) -> dict[str, int]:
    """Late failures recorded, ever, per producer (``unlinked`` for those tied to no job)."""
    return await _late_by(client, workspace, 1)


async def _late_by(client: AsyncStore, workspace: str, part: int) -> dict[str, int]:
    raw: dict[bytes, bytes] = await _call(client.hgetall(keys.late_counts(workspace)))
    out: dict[str, int] = {}
    for field, count in raw.items():
        name = field.decode().split("|")[part]
        out[name] = out.get(name, 0) + int(count)
    return out


def _checked(kind: str, original: Any, payload: Any, strict: bool) -> bytes:
    """The corrected call as ingest would store it; InvalidRequest (422) naming each broken
    rule. Fields the original's kind keeps (ids, accept time) come back where left out."""
    rules = job_kind(kind).repair
    if rules is None:
        raise InvalidRequest.of(
            "id", "resend_unsupported", f"a {kind} job cannot be re-sent", status=409
        )
    if not isinstance(payload, dict):
        raise InvalidRequest.of(
            "payload", "type", "the payload must be a JSON object", status=INVALID_FIX_STATUS
        )
    fixed = dict(payload)
    for name in rules.kept:
        if name in original and name not in fixed:
            fixed[name] = original[name]
    prepared = rules.prepare(fixed, strict)
    errors: list[FieldError] = rules.check(prepared, strict)
    if errors:
        raise InvalidRequest(errors, status=INVALID_FIX_STATUS)
    return dumps(prepared)
