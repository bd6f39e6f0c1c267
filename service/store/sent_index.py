"""The index of recently delivered jobs that ties a late failure to what cioq sent.

Customer.io's activity log names the person a failure concerns (``customer_id``,
``customer_identifiers``), the activity's type and name, and for an event sometimes its
id; never cioq's job. So when a Track or Pipelines request is answered 2xx, the drain
writes a copy of each delivered identify and event (entry id, kind, lane, producer, accept
and delivery times, payload) under each identifier it names (`keys.sent_person`: a sorted
set scored by delivery time, trimmed to ``CIOQ_LATE_LINK_WINDOW_S`` and to
``CIOQ_LATE_LINK_PER_PERSON`` copies, expiring with the window) and under its event id
(`keys.sent_event`, a TTL'd string). One script call per `MAX_CALL_JOBS` of a request
(`lua/sent_record.lua`), from `record_sent`; a failed write is logged and costs only links
(the jobs are delivered either way).

`find_sent` answers the job a failure came from: the event by its id when the activity
names one, else the newest job of the person, delivered before the activity, whose call
matches it (an event of that name for ``failed_event``, an identify setting that attribute
for ``failed_attribute_change``). `remove_person` deletes every copy kept for a person, for
a feature that forgets one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from service import keys
from service.jobs import SentCall, job_kind
from service.store.connections import (
    STORE_ERRORS,
    AsyncStore,
    SyncStore,
    load_script,
    store_errors,
)
from service.store.shards import Entry

log = logging.getLogger("cioq.late")

#: A failure's timestamp is whole seconds, and Customer.io's clock is not cioq's: a job
#: delivered up to this long after the activity's second still counts as before it.
CLOCK_SLACK_MS = 2000


@dataclass(frozen=True, slots=True)
class SentJob:
    """One delivered job, as the index keeps it."""

    #: The job's stream entry (``<shard tag>:<ms>-<seq>``): its id in cioq.
    entry: str
    kind: str
    lane: str
    producer: str
    accepted_ms: int
    delivered_ms: int
    payload: bytes

    def copy(self) -> bytes:
        """The stored form: a JSON header, a newline, the payload bytes (JSON, one line)."""
        head = {
            "j": self.entry,
            "k": self.kind,
            "l": self.lane,
            "p": self.producer,
            "a": self.accepted_ms,
            "d": self.delivered_ms,
        }
        return orjson.dumps(head) + b"\n" + self.payload

    @classmethod
    def parse(cls, raw: bytes) -> SentJob:
        head, _, payload = raw.partition(b"\n")
        h = orjson.loads(head)
        return cls(h["j"], h["k"], h["l"], h["p"], int(h["a"]), int(h["d"]), payload)

    def call(self) -> SentCall | None:
        reader = job_kind(self.kind).sent_call
        return None if reader is None else reader(orjson.loads(self.payload))

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.entry,
            "kind": self.kind,
            "lane": self.lane,
            "producer": self.producer,
            "accepted_ms": self.accepted_ms,
            "delivered_ms": self.delivered_ms,
            "payload": orjson.loads(self.payload),
        }


def _calls(entries: Iterable[Entry]) -> Iterable[tuple[Entry, SentCall]]:
    for entry in entries:
        reader = job_kind(entry.kind).sent_call
        if reader is None:
            continue
        call = reader(orjson.loads(entry.payload))
        if call is not None:
            yield entry, call


#: Jobs indexed by one script call at most: a script holds Redis, and a 500-op request's
#: index took 4.9 ms of Redis's time in one call (`INFO commandstats` over
#: bench/sent_index_cost.py), so a call holds it about 2.5 ms at most, as the pipeline of
#: about five commands per job let other clients in between.
MAX_CALL_JOBS = 250


def record_sent(
    client: SyncStore,
    workspace: str,
    lane: str,
    entries: Iterable[Entry],
    now_ms: int,
    *,
    window_s: float,
    per_person: int,
) -> int:
    """Index `entries` Customer.io just accepted (one script call per `MAX_CALL_JOBS`);
    returns how many.

    Never raises for the store: the jobs are delivered, and a lost write costs links only.
    """
    window_ms = int(window_s * 1000)
    if window_ms <= 0:
        return 0
    count = 0
    people: dict[str, list[bytes]] = {}
    events: dict[str, bytes] = {}
    try:
        for entry, call in _calls(entries):
            copy = SentJob(
                f"{entry.shard.tag}:{entry.id.decode()}",
                entry.kind,
                lane,
                entry.producer,
                entry.accepted_ms,
                now_ms,
                entry.payload,
            ).copy()
            for name, value in call.identifiers.items():
                people.setdefault(keys.sent_person(workspace, name, value), []).append(copy)
            if call.event_id:
                events[keys.sent_event(workspace, call.event_id)] = copy
            count += 1
            if count % MAX_CALL_JOBS == 0:
                _write(client, people, events, now_ms, window_ms, per_person)
                people, events = {}, {}
        if people or events:
            _write(client, people, events, now_ms, window_ms, per_person)
    except STORE_ERRORS as exc:
        log.warning("%s: the index of delivered jobs missed %d: %s", workspace, count, exc)
        return 0
    return count


def _write(
    client: SyncStore,
    people: dict[str, list[bytes]],
    events: dict[str, bytes],
    now_ms: int,
    window_ms: int,
    per_person: int,
) -> None:
    args: list[Any] = [now_ms, window_ms, per_person, len(people)]
    for copies in people.values():
        args.append(len(copies))
        args += copies
    args += events.values()
    # Registered per call: a sha of the (cached) source, and redis-py loads it on NOSCRIPT.
    load_script(client, "sent_record")(keys=[*people, *events], args=args)


def _identifiers(activity: Mapping[str, Any]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    named = activity.get("customer_identifiers")
    if isinstance(named, dict):
        found += [(str(k), str(v)) for k, v in named.items() if v not in (None, "")]
    if (
        activity.get("customer_id") not in (None, "")
        and ("id", str(activity["customer_id"])) not in found
    ):
        found.append(("id", str(activity["customer_id"])))
    return found


def matches(call: SentCall | None, activity_type: str, name: str) -> bool:
    """Whether a delivered `call` is one that could fail as `activity_type` named `name`."""
    if call is None:
        return False
    if activity_type == "failed_event":
        return call.action == "event" and (not name or call.name == name)
    if activity_type == "failed_attribute_change":
        if call.action != "identify":
            return False
        return not name or name in call.attributes or name in call.identifiers
    return False


def could_link(activity: Mapping[str, Any]) -> bool:
    """Whether `activity` is of a kind cioq ties to jobs and names a person or an event."""
    if activity.get("type") not in ("failed_event", "failed_attribute_change"):
        return False
    data = activity.get("data")
    return bool(_identifiers(activity)) or (isinstance(data, dict) and bool(data.get("event_id")))


def find_sent(client: SyncStore, workspace: str, activity: Mapping[str, Any]) -> SentJob | None:
    """The delivered job `activity` (a failure from the log) came from, or None."""
    activity_type = str(activity.get("type") or "")
    name = str(activity.get("name") or "")
    data: dict[str, Any] = activity["data"] if isinstance(activity.get("data"), dict) else {}
    event_id = str(data.get("event_id") or "") if activity_type == "failed_event" else ""
    people = _identifiers(activity)
    if not people and not event_id:
        return None
    before_ms = int(activity.get("timestamp") or 0) * 1000 + CLOCK_SLACK_MS
    with store_errors("late failure link"):
        pipe = client.pipeline(transaction=False)
        if event_id:
            pipe.get(keys.sent_event(workspace, event_id))
        for ident, value in people:
            pipe.zrevrangebyscore(keys.sent_person(workspace, ident, value), before_ms, "-inf")
        results = pipe.execute()
    if event_id:
        raw = results.pop(0)
        if raw:
            return SentJob.parse(raw)
    best: SentJob | None = None
    for rows in results:
        for raw in rows:
            job = SentJob.parse(raw)
            if best is not None and job.delivered_ms <= best.delivered_ms:
                break  # newest first: this key has nothing newer than the best so far
            if matches(job.call(), activity_type, name):
                best = job
                break
    return best


def _person_keys(workspace: str, identifiers: Mapping[str, str]) -> list[str]:
    return [keys.sent_person(workspace, k, v) for k, v in identifiers.items() if v]


def _removals(
    workspace: str, people: list[str], rows: Iterable[list[bytes]]
) -> tuple[list[str], list[tuple[str, bytes]]]:
    """(keys to delete, (key, copy) pairs to remove) for a person whose index keys are
    `people` and hold `rows`: their keys, the event-id entries of their copies, and each
    copy under any other identifier it names (a Pipelines identify is kept under its
    ``userId`` and its ``traits.email``; forget may be given only one)."""
    doomed: set[str] = set(people)
    elsewhere: set[tuple[str, bytes]] = set()
    for row in rows:
        for raw in row:
            call = SentJob.parse(raw).call()
            if call is None:
                continue
            if call.event_id:
                doomed.add(keys.sent_event(workspace, call.event_id))
            for name, value in call.identifiers.items():
                key = keys.sent_person(workspace, name, value)
                if key not in doomed:
                    elsewhere.add((key, raw))
    return sorted(doomed), sorted(elsewhere)


def remove_person(client: SyncStore, workspace: str, identifiers: Mapping[str, str]) -> int:
    """Delete every job copy kept for a person, named by its identifiers (``{"id": "42",
    "email": "a@example.com"}``), wherever it is kept; returns the keys and copies deleted.
    Only the identifiers named are looked up: name each one the person had."""
    people = _person_keys(workspace, identifiers)
    if not people:
        return 0
    with store_errors("forget a person's delivered jobs"):
        pipe = client.pipeline(transaction=False)
        for key in people:
            pipe.zrange(key, 0, -1)
        doomed, elsewhere = _removals(workspace, people, pipe.execute())
        pipe = client.pipeline(transaction=False)
        for key in doomed:
            pipe.delete(key)
        for key, copy in elsewhere:
            pipe.zrem(key, copy)
        return sum(int(n) for n in pipe.execute())


async def remove_person_async(
    client: AsyncStore, workspace: str, identifiers: Mapping[str, str]
) -> int:
    """`remove_person` for the async store (the api's and console's client)."""
    people = _person_keys(workspace, identifiers)
    if not people:
        return 0
    with store_errors("forget a person's delivered jobs"):
        pipe = client.pipeline(transaction=False)
        for key in people:
            pipe.zrange(key, 0, -1)
        doomed, elsewhere = _removals(workspace, people, await pipe.execute())
        pipe = client.pipeline(transaction=False)
        for key in doomed:
            pipe.delete(key)
        for key, copy in elsewhere:
            pipe.zrem(key, copy)
        return sum(int(n) for n in await pipe.execute())
