"""The Track lane's jobs: v2 operations (sent in ``POST /api/v2/batch`` bodies, byte for
byte as stored) and v1 requests that have no v2 equivalent (sent alone to their path)."""

from __future__ import annotations

from typing import Any

import orjson

from service.errors import FieldError
from service.jobs import (
    Job,
    JobKind,
    Lane,
    RepairRules,
    SentCall,
    dumps,
    request_job,
    request_kind,
)
from service.lanes.track.limits import Limits
from service.lanes.track.validation import drop_unknown, op_size_error, validate_op

#: Stream entry field holding a v2 operation's JSON bytes.
FIELD_OP = b"o"
#: Stream entry field holding a v1 request envelope ``{"method","path","query","body"}``.
FIELD_V1 = b"v1"


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
    request = {"method": method, "path": path, "query": query, "body": body}
    return request_job("v1", request, route=route, op_type=op_type)


def _restore_v2(payload: bytes) -> Job:
    data = orjson.loads(payload)
    return Job("v2", route_of(data), payload, str(data.get("action")))


def _v1_subjects(data: Any) -> set[str]:
    route = str(data.get("route", ""))
    return {route, route.partition(":")[2]}


def _v1_person(data: Any) -> str:
    return str(data.get("route", "")) if isinstance(data, dict) else ""


def _check_v2(op: Any, strict: bool) -> list[FieldError]:
    """Ingest's rules for one v2 operation (a repaired letter's), size included."""
    limits = Limits(strict=strict)
    errors = validate_op(op, limits=limits)
    size = op_size_error(dumps(op), where="", limits=limits)
    return errors if size is None else [*errors, size]


def person_delete(id_type: str, value: str) -> Job:
    """Track's ``DELETE /api/v1/customers/{id}``, as the v2 op cioq stores it."""
    return v2_job({"type": "person", "action": "delete", "identifiers": {id_type: value}})


def _v2_erases(op: Any) -> dict[str, str]:
    """A person delete or suppress names whom Customer.io removes."""
    if not isinstance(op, dict) or op.get("type") != "person":
        return {}
    if op.get("action") not in ("delete", "suppress"):
        return {}
    ident = op.get("identifiers")
    return {str(k): str(v) for k, v in ident.items()} if isinstance(ident, dict) else {}


def _v2_sent(op: Any) -> SentCall | None:
    """An identify or event of a person (the ops that can fail late), else None."""
    if not isinstance(op, dict) or op.get("type") != "person":
        return None
    action, ident = op.get("action"), op.get("identifiers")
    if action not in ("identify", "event") or not isinstance(ident, dict):
        return None
    attributes = op.get("attributes")
    names = tuple(attributes) if isinstance(attributes, dict) else ()
    event_id = op.get("id") if action == "event" and isinstance(op.get("id"), str) else ""
    return SentCall(
        str(action),
        {str(k): str(v) for k, v in ident.items()},
        str(op.get("name") or "") if action == "event" else "",
        names,
        event_id or "",
    )


V2 = JobKind(
    "v2",
    FIELD_OP,
    Lane.TRACK,
    batches=True,
    restore=_restore_v2,
    erases=_v2_erases,
    # An event's id is what Customer.io de-duplicates on; the timestamp is the accept time.
    repair=RepairRules(
        _check_v2,
        kept=("id", "timestamp"),
        prepare=lambda op, strict: op if strict else drop_unknown(op),
    ),
    sent_call=_v2_sent,
)
V1 = request_kind("v1", FIELD_V1, Lane.TRACK, subjects=_v1_subjects, person=_v1_person)
