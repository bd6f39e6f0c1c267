"""The Pipelines lane's jobs: calls sent in ``/v1/batch`` bodies, byte for byte as stored."""

from __future__ import annotations

from typing import Any

import orjson

from service.errors import FieldError
from service.jobs import Job, JobKind, Lane, RepairRules, SentCall, dumps
from service.lanes.pipelines.validation import validate_call

#: Stream entry field holding a Pipelines (CDP) call's JSON bytes, sent in ``/v1/batch``.
FIELD_CDP = b"c"


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


def _restore(payload: bytes) -> Job:
    data = orjson.loads(payload)
    return cdp_job(data, route=cdp_route(data))


def _subjects(data: Any) -> set[str]:
    names = ("userId", "anonymousId", "previousId", "groupId")
    return {str(data[n]) for n in names if data.get(n) not in (None, "")}


def _check(call: Any, strict: bool) -> list[FieldError]:
    return validate_call(call, call_type=None, strict=strict)


#: Semantic events that remove a person at Customer.io (strict mode: ``userId`` required).
_ERASING_EVENTS = ("User Deleted", "User Suppressed")


def _erases(call: Any) -> dict[str, str]:
    if not isinstance(call, dict) or call.get("type") != "track":
        return {}
    if call.get("event") not in _ERASING_EVENTS or call.get("userId") in (None, ""):
        return {}
    return {"id": str(call["userId"])}


def _sent(call: Any) -> SentCall | None:
    """An identify or track call naming a person (the calls that can fail late), else None.

    Customer.io keys a Pipelines person by ``userId`` (its ``id``); an identify's
    ``traits.email`` names the person too."""
    if not isinstance(call, dict) or call.get("type") not in ("identify", "track"):
        return None
    ident: dict[str, str] = {}
    if call.get("userId") not in (None, ""):
        ident["id"] = str(call["userId"])
    traits: dict[str, Any] = call["traits"] if isinstance(call.get("traits"), dict) else {}
    if traits.get("email"):
        ident["email"] = str(traits["email"])
    if not ident:
        return None
    message_id = call.get("messageId") if isinstance(call.get("messageId"), str) else ""
    if call["type"] == "identify":
        return SentCall("identify", ident, attributes=tuple(traits))
    return SentCall("event", ident, str(call.get("event") or ""), event_id=message_id or "")


CDP = JobKind(
    "cdp",
    FIELD_CDP,
    Lane.PIPELINES,
    batches=True,
    restore=_restore,
    subjects=_subjects,
    erases=_erases,
    # messageId is Customer.io's de-duplication key; timestamp the accept time.
    repair=RepairRules(_check, kept=("messageId", "timestamp")),
    sent_call=_sent,
)
