"""Jobs: what ingest stores in a shard's stream and what a drain reads back.

A job is one unit of work of some *kind* (a Track v2 operation, a v1 request, a
Pipelines call, an App API request...), stored as one field of a stream entry. Its
*route* names the person, object or delivery it concerns; every job of one route goes
to one shard, so their order is kept.

Each lane declares its kinds (`JobKind`) in its own folder and `service.lanes.registry`
registers them here, so the shared layers below the lanes (store, dead letters,
metrics) read a stored job through this table and never switch on a kind themselves.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from service.errors import FieldError


class Lane(StrEnum):
    """An upstream API family (Track, Pipelines, App API); `service.lanes` holds each one.

    A lane registered outside this list (`service.lanes.registry.register`) is named by
    its plain string: every shared layer only stores, labels and compares the name.
    """

    TRACK = "track"
    PIPELINES = "pipelines"
    APP = "app"
    #: App API broadcast triggers: their own streams, because a broadcast's triggers leave
    #: 10 s apart and must not hold back the sends queued behind them in a shared shard.
    BROADCASTS = "broadcasts"


class Traffic(StrEnum):
    """A job's scheduling class, chosen by its producer at ingest.

    Live jobs (the default) are drained first; bulk jobs (backfills, imports) live in
    streams of their own and drain with the capacity live traffic leaves. Per-person
    order holds within a class, not across the two (docs/live-and-bulk.md).
    """

    LIVE = "live"
    BULK = "bulk"


@dataclass(frozen=True, slots=True)
class Job:
    """One accepted unit of work, serialized once at ingest."""

    kind: str
    route: str
    payload: bytes
    op_type: str

    @property
    def field(self) -> bytes:
        return job_kind(self.kind).field

    @property
    def lane(self) -> Lane:
        return job_kind(self.kind).lane_of(self.route)


def request_job(kind: str, request: dict[str, Any], *, route: str, op_type: str) -> Job:
    """A job that is one request sent alone, stored as its `request` envelope; the route and
    op type ride along so a dead-lettered job can be replayed to its shard."""
    envelope = {**request, "route": route, "op_type": op_type}
    return Job(kind=kind, route=route, payload=dumps(envelope), op_type=op_type)


def identifier_values(data: Any) -> set[str]:
    """Every identifier value a Customer.io ``identifiers``/``primary``/``secondary``
    object in `data` names."""
    found: set[str] = set()
    for name in ("identifiers", "primary", "secondary"):
        ident = data.get(name) if isinstance(data, dict) else None
        if isinstance(ident, dict):
            found.update(str(v) for v in ident.values())
    return found


def identified_person(data: Any) -> str:
    """Who `data`'s ``identifiers`` (else ``primary``) name, as an operator reads it."""
    ident = (data.get("identifiers") or data.get("primary")) if isinstance(data, dict) else None
    if isinstance(ident, dict):
        return ", ".join(f"{k}={v}" for k, v in ident.items())
    return ""


@dataclass(frozen=True, slots=True)
class RepairRules:
    """How an operator may edit a dead letter of a kind before replaying it."""

    #: Every ingest rule a stored payload breaks as a new call of the kind (payload as
    #: JSON, the workspace's strictness); fields named as the stored payload names them.
    check: Callable[[Any, bool], list[FieldError]]
    #: Top-level payload fields a repair keeps from the letter: the ids Customer.io
    #: de-duplicates on, the accept time stamped at ingest, where a request goes. A fix
    #: that leaves one out gets the letter's back; one that changes it is refused.
    kept: tuple[str, ...] = ()
    #: What ingest stores of a call before checking it (a loose workspace's Track op
    #: loses its unknown fields), given the workspace's strictness.
    prepare: Callable[[Any, bool], Any] = lambda data, strict: data


@dataclass(frozen=True, slots=True)
class SentCall:
    """What a delivered job asked of one person, as far as tying a late failure to it needs
    (`service.store.sent_index`): an identify and the attributes it set, or an event."""

    #: ``identify`` or ``event``.
    action: str
    #: The identifiers it names, e.g. ``{"id": "42"}`` or ``{"email": "a@example.com"}``.
    identifiers: dict[str, str]
    #: An event's name ("" for an identify).
    name: str = ""
    #: The attributes an identify sets (names only).
    attributes: tuple[str, ...] = ()
    #: An event's id (Track ``id``, Pipelines ``messageId``), when it has one.
    event_id: str = ""


@dataclass(frozen=True, slots=True)
class JobKind:
    """One kind of job a lane stores, and what the shared layers may ask of it."""

    name: str
    #: The stream entry field that holds its payload (one field per entry).
    field: bytes
    #: The lane whose streams hold it.
    lane: Lane
    #: Whether jobs of the kind travel together in one request body (else one each).
    batches: bool
    #: The job a stored payload came from (a dead letter replays it unchanged).
    restore: Callable[[bytes], Job]
    #: Who a stored payload concerns, by every identifier value it names (a filter).
    subjects: Callable[[Any], set[str]] = identifier_values
    #: Who a stored payload concerns, as an operator reads it (``id=42``).
    person: Callable[[Any], str] = identified_person
    #: Whether a replay may repeat an action Customer.io already took (no idempotency).
    at_most_once: bool = False
    #: The lane of a job by its route, when the kind's jobs live in more than one lane.
    by_route: Callable[[str], Lane] | None = None
    #: How a dead letter of the kind is repaired; None: it can only be replayed as it is.
    repair: RepairRules | None = None
    #: The identifiers (``{"id": "42"}``) of the person a stored payload deletes or
    #: suppresses at Customer.io; empty for any other job (a workspace's
    #: ``forget_on_delete`` removes that person's older jobs first).
    erases: Callable[[Any], dict[str, str]] = lambda data: {}
    #: What a delivered job of the kind asked of a person (identify/event), so a late
    #: failure can be tied to it; None (or a None answer): it cannot fail late.
    sent_call: Callable[[Any], SentCall | None] | None = None

    def lane_of(self, route: str) -> Lane:
        return self.lane if self.by_route is None else self.by_route(route)


def request_kind(name: str, entry_field: bytes, lane: Lane, **traits: Any) -> JobKind:
    """A kind of `request_job`: each job is one request, sent alone."""

    def restore(payload: bytes) -> Job:
        data = orjson.loads(payload)
        route, op_type = str(data.get("route", "unrouted")), str(data.get("op_type", ""))
        return Job(name, route, payload, op_type)

    return JobKind(name, entry_field, lane, batches=False, restore=restore, **traits)


@dataclass(frozen=True, slots=True)
class LaneTraits:
    """What the shared layers know of a lane: its name, kinds, whether it batches, and
    which workspaces it serves (those with its credentials)."""

    lane: Lane
    kinds: tuple[JobKind, ...]
    #: Whether its jobs wait (linger) to fill batch requests; else each goes out at once.
    batches: bool
    #: Whether a workspace (a `service.config.Workspace`) delivers this lane.
    serves: Callable[[Any], bool]
    #: What names the lane in its Redis keys (`service.keys`): ``:<lane>``, or nothing for
    #: a lane whose keys predate lanes (Track's: queues in production are written under them).
    key_infix: str
    #: The routes a person's jobs take, from an identifier (type, value), so forget reads
    #: only those shards; None: the lane's routes do not follow the person (App sends
    #: route by job id), and forget reads every shard of the lane.
    person_routes: Callable[[str, str], tuple[str, ...]] | None = None
    #: The job that deletes a person at Customer.io, from an identifier (type, value)
    #: (forget's ``delete_upstream``); None: the lane has no such call.
    person_delete: Callable[[str, str], Job] | None = None


#: The stream entry field naming the job's producer (`lua/enqueue.lua`), beside the job's
#: own field; no kind may use it.
PRODUCER_FIELD = b"p"
#: How a job stored without a producer (before producers were recorded) is counted and listed.
UNKNOWN_PRODUCER = "unknown"

_LANES: dict[Lane, LaneTraits] = {}
_KINDS: dict[str, JobKind] = {}
_BY_FIELD: dict[bytes, JobKind] = {}
#: The names of the kinds that batch. The drain asks it of every buffered entry on every
#: step (a 4,000-entry buffer a few times per request), so it is a set, not a lookup each.
_BATCHING: set[str] = set()


def register_lane(traits: LaneTraits) -> None:
    """Make a lane and its kinds known to the shared layers (`service.lanes.registry`)."""
    if any(kind.field == PRODUCER_FIELD for kind in traits.kinds):
        raise ValueError(f"the entry field {PRODUCER_FIELD!r} names producers, not a kind")
    _LANES[traits.lane] = traits
    for kind in traits.kinds:
        _KINDS[kind.name] = kind
        _BY_FIELD[kind.field] = kind
        if kind.batches:
            _BATCHING.add(kind.name)


def unregister_lane(lane: Lane) -> None:
    """Forget a lane registered for a while (a test's lane)."""
    traits = _LANES.pop(lane)
    kept = {kind.name for other in _LANES.values() for kind in other.kinds}
    for kind in traits.kinds:
        if kind.name not in kept:
            del _KINDS[kind.name]
            del _BY_FIELD[kind.field]
            _BATCHING.discard(kind.name)


def registered_lanes() -> tuple[Lane, ...]:
    """Every registered lane, in registration order."""
    return tuple(_LANES)


def lane_traits(lane: Lane) -> LaneTraits:
    return _LANES[lane]


def find_lane(name: str) -> Lane | None:
    """The registered lane named `name`, or None."""
    return next((lane for lane in _LANES if lane == name), None)


def lane_named(name: str) -> Lane:
    """The registered lane named `name`; ValueError when there is none."""
    found = find_lane(name)
    if found is None:
        raise ValueError(f"no lane named {name!r} is registered")
    return found


def lanes_serving(workspace: Any) -> tuple[Lane, ...]:
    """The registered lanes `workspace` delivers."""
    return tuple(t.lane for t in _LANES.values() if t.serves(workspace))


def job_kind(name: str) -> JobKind:
    """The registered kind `name` (`service.lanes.registry` registers every lane's)."""
    try:
        return _KINDS[name]
    except KeyError:
        raise KeyError(f"no lane registered the job kind {name!r}") from None


def job_kind_of_field(entry_field: bytes) -> JobKind | None:
    """The kind a stream entry's field holds; None for a field that holds no job."""
    return _BY_FIELD.get(entry_field)


def job_kinds_by_field() -> Mapping[bytes, JobKind]:
    """Every registered kind by its stream entry field (`job_kind_of_field` for a reader of
    thousands of entries at once: one lookup each, no call). A live view: do not keep it."""
    return _BY_FIELD


def batching_kinds() -> Set[str]:
    """The names of the registered kinds that batch (`JobKind.batches`). A live view."""
    return _BATCHING


def restore_job(kind: str, payload: bytes) -> Job:
    """The job a stored payload came from, e.g. to replay a dead letter unchanged."""
    return job_kind(kind).restore(payload)


def op_type_of(kind: str, payload: bytes) -> str:
    """The operation type of a stored payload (v2 action, or the v1 call's name)."""
    return restore_job(kind, payload).op_type


#: Crockford's base32, the ULID alphabet; and each byte's last 5 bits as one of its letters.
_ULID_ALPHABET = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_LETTER = bytes(_ULID_ALPHABET[b & 31] for b in range(256))
_stamp: tuple[int, str] = (0, "")


def new_event_id() -> str:
    """A fresh ULID, the event id Customer.io deduplicates on.

    By hand, not python-ulid: it is made once per event (1,000 per v2 batch), and this
    takes 0.75 µs against python-ulid's 4.1 µs: the 10 letters of the millisecond are
    made once per millisecond, and 16 random bytes become the 80 random bits, 5 per
    letter, with one ``bytes.translate`` (tests/unit: python-ulid parses them back).
    """
    global _stamp
    ms = time.time_ns() // 1_000_000
    if ms != _stamp[0]:
        letters = "".join(chr(_ULID_ALPHABET[(ms >> shift) & 31]) for shift in range(45, -5, -5))
        _stamp = (ms, letters)  # one assignment: a thread sees one pair or the other
    return _stamp[1] + os.urandom(16).translate(_RANDOM_LETTER).decode("ascii")


def person_routes(id_type: str, value: str) -> tuple[str, ...]:
    """The route of a person's jobs in the lanes that route by person (Track's
    ``person:<identifier>:<value>``, which Pipelines' calls share)."""
    return (f"person:{id_type}:{value}",)


def shard_for(workspace: str, route: str, shards: int) -> int:
    """The shard of a route: stable across processes, restarts and Python versions."""
    return zlib.crc32(f"{workspace}\x00{route}".encode()) % shards


def dumps(value: Any) -> bytes:
    """JSON bytes exactly as cioq stores and sends them."""
    return orjson.dumps(value)
