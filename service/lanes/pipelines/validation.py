"""Validation of Pipelines (CDP) calls against the Segment spec as Customer.io publishes it.

Pure: a call in, a list of `FieldError`s out (empty when it is valid); field paths are
prefixed with ``where`` (``batch[3].userId``). Sources: reference `cdp-and-app-api.md`
§1.2 (the Pipelines OpenAPI's required fields and semantic events).

The rules are the Pipelines document's required fields and its semantic-event schemas
(docs/validation-rules.md). With ``strict`` (the workspace's ``strict_validation``), an
empty-string id or ``messageId`` counts as missing; otherwise it is an id like any
other, as the document's ``type: string`` has it.

Choices where Customer.io's documentation is silent:

* ``userId``/``anonymousId``/``groupId``/``previousId`` must be strings or numbers (the
  Segment spec allows both); anything else could not route the call.
* identify may name its person by ``traits.email`` alone (the spec allows it with
  Customer.io as the destination); such a call routes by that email.
* ``timestamp``, when sent, must be an ISO-8601 string: Customer.io back-dates by it, and
  one it cannot parse would be refused in strict mode after cioq had accepted it.
* ``alias`` is accepted inside ``/v1/batch`` (customerio-node's ``batch()`` sends it),
  and in the drain it travels in ``/v1/batch`` bodies like every other call.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.errors import FieldError

CALL_TYPES = ("identify", "track", "page", "screen", "group", "alias")

#: Customer.io's semantic events and the fields each requires (dotted paths).
SEMANTIC_EVENTS: dict[str, tuple[str, ...]] = {
    "Device Created or Updated": ("userId", "context.device.token"),
    "Device Deleted": ("userId", "context.device.token"),
    "User Deleted": ("userId",),
    "User Suppressed": ("userId",),
    "User Unsuppressed": ("userId",),
    "Relationship Deleted": ("userId", "properties.objectId"),
    "Object Deleted": ("anonymousId", "properties.objectId", "properties.objectTypeId"),
    "Report Delivery Event": ("properties.deliveryId", "properties.metric"),
}
DELIVERY_METRICS = ("delivered", "opened", "clicked", "converted")

_OBJECT_FIELDS = ("traits", "properties", "context", "integrations")
_ID_FIELDS = ("userId", "anonymousId", "groupId", "previousId")


def _get(call: dict[str, Any], dotted: str) -> Any:
    value: Any = call
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _is_id(value: Any, strict: bool) -> bool:
    if isinstance(value, bool):
        return False
    return (isinstance(value, str) and (value != "" or not strict)) or isinstance(
        value, int | float
    )


def is_iso8601(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def validate_call(
    call: Any, *, call_type: str | None, where: str = "", strict: bool = False
) -> list[FieldError]:
    """Every broken rule of one call (sent to ``/v1/<call_type>``, or a batch item)."""
    prefix = f"{where}." if where else ""
    if not isinstance(call, dict):
        return [FieldError(where or "body", "type", "a call must be a JSON object")]
    errors: list[FieldError] = []
    kind = call_type or call.get("type")
    if call_type is not None and call.get("type") not in (None, call_type):
        errors.append(
            FieldError(f"{prefix}type", "one_of", f"type must be {call_type!r} on this path")
        )
    if kind not in CALL_TYPES:
        message = f"type must be one of {', '.join(CALL_TYPES)}"
        return [*errors, FieldError(f"{prefix}type", "one_of", message)]
    for name in _ID_FIELDS:
        if name in call and call[name] is not None and not _is_id(call[name], strict):
            message = f"{name} must be a {'non-empty ' if strict else ''}string or a number"
            errors.append(FieldError(f"{prefix}{name}", "type", message))
    for name in _OBJECT_FIELDS:
        if name in call and not isinstance(call[name], dict):
            errors.append(FieldError(f"{prefix}{name}", "type", f"{name} must be an object"))
    message_id = call.get("messageId")
    if "messageId" in call and not (isinstance(message_id, str) and (message_id or not strict)):
        message = "messageId must be a non-empty string" if strict else "messageId must be a string"
        errors.append(FieldError(f"{prefix}messageId", "type", message))
    if "timestamp" in call and not is_iso8601(call["timestamp"]):
        message = "timestamp must be an ISO-8601 date-time string"
        errors.append(FieldError(f"{prefix}timestamp", "iso8601", message))
    errors.extend(_type_rules(call, str(kind), prefix, strict))
    return errors


def _required(
    call: dict[str, Any], dotted: str, prefix: str, why: str, strict: bool
) -> list[FieldError]:
    value = _get(call, dotted)
    if value is None or (strict and value == ""):
        return [FieldError(f"{prefix}{dotted}", "required", f"{dotted} is required {why}")]
    return []


def _type_rules(call: dict[str, Any], kind: str, prefix: str, strict: bool) -> list[FieldError]:
    has_person = _is_id(call.get("userId"), strict) or _is_id(call.get("anonymousId"), strict)
    errors: list[FieldError] = []
    if kind == "alias":
        errors += _required(call, "previousId", prefix, "on alias", strict)
        errors += _required(call, "userId", prefix, "on alias", strict)
        return errors
    if kind == "group":
        errors += _required(call, "groupId", prefix, "on group", strict)
    if kind == "track":
        event = call.get("event")
        if not isinstance(event, str) or not event:
            return [*errors, FieldError(f"{prefix}event", "required", "event is required")]
        needs = SEMANTIC_EVENTS.get(event, ())
        for dotted in needs:
            errors += _required(call, dotted, prefix, f"by the {event!r} event", strict)
        if event == "Report Delivery Event":
            metric = _get(call, "properties.metric")
            if metric is not None and metric not in DELIVERY_METRICS:
                message = f"properties.metric must be one of {', '.join(DELIVERY_METRICS)}"
                errors.append(FieldError(f"{prefix}properties.metric", "one_of", message))
            return errors
        if needs and needs[0] in ("userId", "anonymousId"):
            return errors
    email = _get(call, "traits.email")
    by_email = kind == "identify" and isinstance(email, str) and (email != "" or not strict)
    if not has_person and not by_email:
        message = "userId or anonymousId is required"
        if kind == "identify":
            message += " (or traits.email)"
        errors.append(FieldError(f"{prefix}userId", "required", message))
    return errors
