"""Customer.io's checks on one Track API v2 operation, as pure functions.

`check_op` answers the question Customer.io answers for every item of a `/api/v2/batch`
(or the whole body of `/api/v2/entity`): is this operation acceptable, and if not, which
field is wrong and why. The rules follow the published v2 schema (reference §1): the
type/action table, exactly one person identifier, merge's primary/secondary, event names,
devices, relationships, object and delivery identifiers, and the 32 KB op limit.

The first failing rule wins, so every invalid op yields exactly one error, as Customer.io's
207 `errors` list holds one entry per failed item.
"""

from __future__ import annotations

from typing import Any, TypedDict

import orjson

__all__ = [
    "ACTIONS_BY_TYPE",
    "MAX_EVENT_NAME_BYTES",
    "MAX_SEGMENT_IDS",
    "OpError",
    "check_form",
    "check_op",
    "check_segment_ids",
    "check_v1_event",
]

ACTIONS_BY_TYPE: dict[str, frozenset[str]] = {
    "person": frozenset(
        {
            "identify",
            "delete",
            "event",
            "screen",
            "page",
            "add_relationships",
            "delete_relationships",
            "add_device",
            "delete_device",
            "merge",
            "suppress",
            "unsuppress",
        }
    ),
    "object": frozenset(
        {"identify", "identify_anonymous", "delete", "add_relationships", "delete_relationships"}
    ),
    "delivery": frozenset({"event"}),
}

MAX_EVENT_NAME_BYTES = 100
MAX_SEGMENT_IDS = 1000

_PERSON_ID_KEYS = frozenset({"id", "email", "phone", "cio_id"})
_MERGE_ID_KEYS = frozenset({"id", "email", "cio_id"})
# Segment and RudderStack send anonymous person events this way; Customer.io accepts them.
_ANONYMOUS_ACTIONS = frozenset({"event", "page", "screen"})
_NAMED_ACTIONS = frozenset({"event", "page", "screen"})
_RELATIONSHIP_ACTIONS = frozenset({"add_relationships", "delete_relationships"})
_DEVICE_PLATFORMS = frozenset({"ios", "android"})
_DELIVERY_EVENTS = frozenset({"opened", "converted", "delivered"})
_OBJECT_ID_KEYS = frozenset({"object_type_id", "object_id"})


class OpError(TypedDict):
    """Why one operation was refused, in the shape of a Customer.io `errors` entry."""

    reason: str  # "required" | "invalid" | "too_large"
    field: str  # dotted path inside the op, e.g. "identifiers" or "device.token"
    message: str


def _error(reason: str, field: str, message: str) -> OpError:
    return {"reason": reason, "field": field, "message": message}


def _is_text(value: object) -> bool:
    return type(value) is str and value != ""


def check_op(op: object, max_op_bytes: int) -> OpError | None:
    """Return the first rule `op` breaks, or None when Customer.io would accept it.

    `op` is a value decoded by `orjson.loads`. `max_op_bytes` bounds its compact JSON
    serialization (32,768 at Customer.io).
    """
    if type(op) is not dict:
        return _error("invalid", "op", "operation must be a JSON object")
    op_bytes = len(orjson.dumps(op))
    if op_bytes > max_op_bytes:
        return _error("too_large", "op", f"operation is {op_bytes} bytes; limit {max_op_bytes}")
    op_type = op.get("type")
    if op_type is None:
        return _error("required", "type", "type is required")
    actions = ACTIONS_BY_TYPE.get(op_type) if type(op_type) is str else None
    if actions is None:
        return _error("invalid", "type", "type must be one of person, object, delivery")
    action = op.get("action")
    if action is None:
        return _error("required", "action", "action is required")
    if type(action) is not str or action not in actions:
        return _error("invalid", "action", f"action {action!r} is not valid for type {op_type}")
    if op_type == "person":
        return _check_person(op, action)
    if op_type == "object":
        return _check_object(op, action)
    return _check_delivery(op)


def _check_person(op: dict[str, Any], action: str) -> OpError | None:
    if action == "merge":
        return _check_merge(op)
    error = _check_person_identifiers(op, action)
    if error is not None:
        return error
    if action in _NAMED_ACTIONS:
        return _check_event_name(op.get("name"))
    if action == "add_device" or action == "delete_device":
        return _check_device(op.get("device"), needs_platform=action == "add_device")
    if action in _RELATIONSHIP_ACTIONS:
        return _check_relationships(op)
    return None


def _check_person_identifiers(op: dict[str, Any], action: str) -> OpError | None:
    identifiers = op.get("identifiers")
    if identifiers is None:
        return _error("required", "identifiers", "identifiers is required")
    if type(identifiers) is not dict or len(identifiers) != 1:
        return _error("invalid", "identifiers", "identifiers must hold exactly one identifier")
    ((key, value),) = identifiers.items()
    allowed = key in _PERSON_ID_KEYS or (key == "anonymous_id" and action in _ANONYMOUS_ACTIONS)
    if not allowed:
        return _error("invalid", "identifiers", f"{key!r} is not a person identifier here")
    if not _is_text(value):
        return _error("invalid", f"identifiers.{key}", f"{key} must be a non-empty string")
    return None


def _check_merge(op: dict[str, Any]) -> OpError | None:
    if "identifiers" in op:
        return _error(
            "invalid", "identifiers", "merge takes primary and secondary, not identifiers"
        )
    for side in ("primary", "secondary"):
        person = op.get(side)
        if person is None:
            return _error("required", side, f"{side} is required")
        if (
            type(person) is not dict
            or len(person) != 1
            or not _MERGE_ID_KEYS.issuperset(person)
            or not _is_text(next(iter(person.values())))
        ):
            return _error(
                "invalid", side, f"{side} must hold exactly one of id, email, cio_id as a string"
            )
    return None


def _check_event_name(name: object) -> OpError | None:
    if name is None or name == "":
        return _error("required", "name", "event name must not be blank")
    if type(name) is not str:
        return _error("invalid", "name", "name must be a string")
    if len(name.encode()) > MAX_EVENT_NAME_BYTES:
        return _error(
            "too_large", "name", f"event name cannot be longer than {MAX_EVENT_NAME_BYTES} bytes"
        )
    return None


def _check_device(device: object, *, needs_platform: bool) -> OpError | None:
    if device is None:
        return _error("required", "device", "device is required")
    if type(device) is not dict:
        return _error("invalid", "device", "device must be an object")
    token = device.get("token")
    if token is None:
        return _error("required", "device.token", "device.token is required")
    if type(token) is not str:  # the document sets no minLength on a token
        return _error("invalid", "device.token", "device.token must be a string")
    if not needs_platform:
        return None
    platform = device.get("platform")
    if platform is None:
        return _error("required", "device.platform", "device.platform is required")
    if type(platform) is not str or platform not in _DEVICE_PLATFORMS:
        return _error("invalid", "device.platform", "device.platform must be ios or android")
    return None


def _check_relationships(op: dict[str, Any]) -> OpError | None:
    relationships = op.get("cio_relationships")
    if relationships is None:
        return _error("required", "cio_relationships", "cio_relationships is required")
    # The document sets no minItems; Customer.io states no refusal of an empty list.
    if type(relationships) is not list:
        return _error("invalid", "cio_relationships", "cio_relationships must be a list")
    return None


def _check_object(op: dict[str, Any], action: str) -> OpError | None:
    identifiers = op.get("identifiers")
    if identifiers is None:
        return _error("required", "identifiers", "identifiers is required")
    if type(identifiers) is not dict:
        return _error("invalid", "identifiers", "identifiers must be an object")
    keys = identifiers.keys()
    if keys != _OBJECT_ID_KEYS and keys != {"cio_object_id"}:
        return _error(
            "invalid",
            "identifiers",
            "object identifiers must be {object_type_id, object_id} or {cio_object_id}",
        )
    for key, value in identifiers.items():
        if not _is_text(value):
            return _error("invalid", f"identifiers.{key}", f"{key} must be a non-empty string")
    if action in _RELATIONSHIP_ACTIONS:
        return _check_relationships(op)
    return None


def _check_delivery(op: dict[str, Any]) -> OpError | None:
    identifiers = op.get("identifiers")
    if identifiers is None:
        return _error("required", "identifiers", "identifiers is required")
    if type(identifiers) is not dict or identifiers.keys() != {"id"}:
        return _error("invalid", "identifiers", "delivery identifiers must be {id}")
    if not _is_text(identifiers["id"]):
        return _error("invalid", "identifiers.id", "id must be a non-empty string")
    name = op.get("name")
    if name is None:
        return _error("required", "name", "name is required")
    if type(name) is not str or name not in _DELIVERY_EVENTS:
        return _error("invalid", "name", "name must be one of opened, converted, delivered")
    attributes = op.get("attributes")
    token = attributes.get("device_token") if type(attributes) is dict else None
    if token is None:
        return _error("required", "attributes.device_token", "attributes.device_token is required")
    if type(token) is not str:  # "" is a string (SPEC: no minLength)
        return _error(
            "invalid", "attributes.device_token", "attributes.device_token must be a string"
        )
    return None


def check_segment_ids(body: object) -> str | None:
    """Return why a v1 segment add/remove body is refused, or None when it is acceptable."""
    ids = body.get("ids") if type(body) is dict else None
    if type(ids) is not list or not ids:
        return "ids must be a non-empty list"
    if len(ids) > MAX_SEGMENT_IDS:
        return f"ids cannot hold more than {MAX_SEGMENT_IDS} items"
    return None


def check_v1_event(body: object) -> str | None:
    """Return why a v1 event body (person or anonymous) is refused, or None."""
    name = body.get("name") if type(body) is dict else None
    if type(name) is not str or not name.strip():
        return "event name must not be blank"
    if len(name.encode()) > MAX_EVENT_NAME_BYTES:
        return f"event name cannot be longer than {MAX_EVENT_NAME_BYTES} bytes"
    return None


def check_form(body: object) -> str | None:
    """Return why a v1 form submission is refused, or None."""
    data = body.get("data") if type(body) is dict else None
    return None if type(data) is dict else "data must be an object"
