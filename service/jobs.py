"""Jobs: what ingest stores in a shard's stream and what a drain reads back.

A job is either a v2 operation (sent in ``POST /api/v2/batch`` bodies, byte for byte as
stored) or a v1 request that has no v2 equivalent (sent alone to its v1 path). Its
*route* names the person, object or delivery it concerns; every job of one route goes
to one shard, so their order is kept.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import orjson
from ulid import ULID

#: Stream entry field holding a v2 operation's JSON bytes.
FIELD_OP = b"o"
#: Stream entry field holding a v1 request envelope ``{"method","path","query","body"}``.
FIELD_V1 = b"v1"
#: Stream entry field holding a Pipelines (CDP) call's JSON bytes, sent in ``/v1/batch``.
FIELD_CDP = b"c"
#: Stream entry field holding an App API request envelope (a send or a broadcast trigger),
#: sent alone: ``{"id","method","path","body","limit","bucket","route","op_type"}``.
FIELD_APP = b"a"


class Lane(StrEnum):
    """An upstream API family (Track, Pipelines, App API); `service.lanes` holds each one."""

    TRACK = "track"
    PIPELINES = "pipelines"
    APP = "app"
    #: App API broadcast triggers: their own streams, because a broadcast's triggers leave
    #: 10 s apart and must not hold back the sends queued behind them in a shared shard.
    BROADCASTS = "broadcasts"


#: Lanes whose jobs go out one request each: nothing to wait for before draining them.
UNBATCHED = frozenset({Lane.APP, Lane.BROADCASTS})


JobKind = Literal["v2", "v1", "cdp", "app"]
#: The route prefix of a broadcast trigger: App jobs routed so live in `Lane.BROADCASTS`.
BROADCAST_ROUTE = "broadcast:"
_FIELDS: dict[str, bytes] = {"v2": FIELD_OP, "v1": FIELD_V1, "cdp": FIELD_CDP, "app": FIELD_APP}
_LANES: dict[str, Lane] = {"cdp": Lane.PIPELINES, "app": Lane.APP}


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

    kind: JobKind
    route: str
    payload: bytes
    op_type: str

    @property
    def field(self) -> bytes:
        return _FIELDS[self.kind]

    @property
    def lane(self) -> Lane:
        if self.kind == "app" and self.route.startswith(BROADCAST_ROUTE):
            return Lane.BROADCASTS
        return lane_of(self.kind)


def lane_of(kind: str) -> Lane:
    """The lane whose streams hold jobs of `kind`."""
    return _LANES.get(kind, Lane.TRACK)


def new_event_id() -> str:
    """A fresh ULID, the event id Customer.io deduplicates on."""
    return str(ULID())


def shard_for(workspace: str, route: str, shards: int) -> int:
    """The shard of a route: stable across processes, restarts and Python versions."""
    return zlib.crc32(f"{workspace}\x00{route}".encode()) % shards


def dumps(value: Any) -> bytes:
    """JSON bytes exactly as cioq stores and sends them."""
    return orjson.dumps(value)


def route_of(op: dict[str, Any]) -> str:
    """The routing key of a validated v2 operation.

    People route by their one identifier (merge by its primary), objects by type and
    id, deliveries by delivery id; so each one's operations stay in order.
    """
    kind = op.get("type")
    if kind == "person":
        ident = op.get("primary") if op.get("action") == "merge" else op.get("identifiers")
        if isinstance(ident, dict) and ident:
            name, value = next(iter(ident.items()))
            return f"person:{name}:{value}"
    elif kind == "object":
        ident = op.get("identifiers")
        if isinstance(ident, dict):
            if "cio_object_id" in ident:
                return f"object:cio:{ident['cio_object_id']}"
            return f"object:{ident.get('object_type_id')}:{ident.get('object_id')}"
    elif kind == "delivery":
        ident = op.get("identifiers")
        if isinstance(ident, dict):
            return f"delivery:{ident.get('id')}"
    return "unrouted"


def v2_job(op: dict[str, Any]) -> Job:
    """Wrap a validated v2 operation as a job."""
    return Job(kind="v2", route=route_of(op), payload=dumps(op), op_type=str(op.get("action")))


def v1_job(method: str, path: str, body: Any, *, route: str, op_type: str, query: str = "") -> Job:
    """Wrap a v1 request that has no v2 equivalent as a job, forwarded to the same path."""
    # Route and op type ride along so a dead-lettered v1 job can be replayed to its shard.
    envelope = {
        "method": method,
        "path": path,
        "query": query,
        "body": body,
        "route": route,
        "op_type": op_type,
    }
    return Job(kind="v1", route=route, payload=dumps(envelope), op_type=op_type)


def cdp_job(call: dict[str, Any], *, route: str) -> Job:
    """Wrap a validated, stamped Pipelines call as a job."""
    return Job(kind="cdp", route=route, payload=dumps(call), op_type=str(call.get("type")))


def cdp_route(call: dict[str, Any]) -> str:
    """The routing key of a Pipelines call: its person (userId, else anonymousId, else an
    identify's email), else the delivery a delivery event reports on.

    The names match Track's (``person:id:<id>``), so one person maps to the same shard
    number in both lanes.
    """
    for name, label in (("userId", "id"), ("anonymousId", "anonymous_id")):
        value = call.get(name)
        if isinstance(value, str | int | float) and not isinstance(value, bool) and value != "":
            return f"person:{label}:{value}"
    traits = call.get("traits")
    if call.get("type") == "identify" and isinstance(traits, dict) and traits.get("email"):
        return f"person:email:{traits['email']}"
    props = call.get("properties")
    if isinstance(props, dict) and props.get("deliveryId"):
        return f"delivery:{props['deliveryId']}"
    return "unrouted"


def app_job(
    job_id: str,
    path: str,
    body: Any,
    *,
    limit: str,
    route: str,
    op_type: str,
    bucket: str = "",
) -> Job:
    """Wrap a validated App API send or trigger as a job: one request, sent alone.

    `job_id` names the job's outcome record; `limit` and `bucket` name its rate budget.
    """
    envelope = {
        "id": job_id,
        "method": "POST",
        "path": path,
        "body": body,
        "limit": limit,
        "bucket": bucket,
        "route": route,
        "op_type": op_type,
    }
    return Job(kind="app", route=route, payload=dumps(envelope), op_type=op_type)


def restore_job(kind: str, payload: bytes) -> Job:
    """The job a stored payload came from, e.g. to replay a dead letter unchanged."""
    data = orjson.loads(payload)
    if kind == "v1" or kind == "app":
        route, op_type = str(data.get("route", "unrouted")), str(data.get("op_type", ""))
        return Job("app" if kind == "app" else "v1", route, payload, op_type)
    if kind == "cdp":
        return cdp_job(data, route=cdp_route(data))
    return Job("v2", route_of(data), payload, str(data.get("action")))


def op_type_of(kind: str, payload: bytes) -> str:
    """The operation type of a stored payload (v2 action, or the v1 call's name)."""
    return restore_job(kind, payload).op_type
