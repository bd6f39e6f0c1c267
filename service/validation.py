"""Validation of v2 operations against Customer.io's schemas and documented limits.

Pure: an op in, a list of `FieldError`s out (empty when valid). Field paths are dotted
and prefixed with `where` (``batch[3].identifiers.id``), so a producer sees exactly
which part of which op broke which rule.
"""

from __future__ import annotations

from typing import Any

import orjson

from service.errors import FieldError
from service.limits import DEFAULT_LIMITS, Limits

PERSON_ACTIONS = frozenset(
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
)
OBJECT_ACTIONS = frozenset(
    {"identify", "identify_anonymous", "delete", "add_relationships", "delete_relationships"}
)
ACTIONS = {"person": PERSON_ACTIONS, "object": OBJECT_ACTIONS, "delivery": frozenset({"event"})}
PERSON_IDS = ("id", "email", "phone", "cio_id")
MERGE_IDS = ("id", "email", "cio_id")
EVENTS = frozenset({"event", "page", "screen"})
DELIVERY_METRICS = frozenset({"opened", "converted", "delivered"})
_CROCKFORD = frozenset("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
#: Larger values are milliseconds (year 2286 in seconds); Customer.io wants seconds.
MAX_SECONDS = 9_999_999_999


def _path(where: str, field: str) -> str:
    return f"{where}.{field}" if where else field


def _nbytes(value: str) -> int:
    return len(value.encode())


def is_ulid(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) == 26
        and value[0] in "01234567"
        and set(value.upper()) <= _CROCKFORD
    )


def check_seconds(value: object, field: str) -> FieldError | None:
    """Timestamps are integer Unix seconds; floats, strings and milliseconds are refused."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return FieldError(field, "seconds", f"{field} must be an integer of Unix seconds")
    if value > MAX_SECONDS:
        return FieldError(
            field, "seconds", f"{field} looks like milliseconds; send seconds", MAX_SECONDS, value
        )
    return None


def check_identifier(value: object, field: str, limits: Limits) -> list[FieldError]:
    if not isinstance(value, str):
        return [FieldError(field, "type", f"{field} must be a string")]
    if not value:
        return [FieldError(field, "required", f"{field} cannot be empty")]
    size = _nbytes(value)
    if size > limits.max_id_bytes:
        return [
            FieldError(
                field,
                "max_bytes",
                f"{field} is over {limits.max_id_bytes} bytes",
                limits.max_id_bytes,
                size,
            )
        ]
    if field.endswith("phone") and not (
        value.startswith("+") and value[1:].isdigit() and 1 <= len(value) - 1 <= 15
    ):
        return [FieldError(field, "format", "phone must be E.164: + and up to 15 digits")]
    return []


def check_one_of(
    ident: object, field: str, allowed: tuple[str, ...], limits: Limits
) -> list[FieldError]:
    """Exactly one identifier of `allowed` kinds, valid."""
    if not isinstance(ident, dict):
        return [FieldError(field, "required", f"{field} must be an object with one identifier")]
    present = [k for k in ident if k in allowed]
    if len(ident) != 1 or len(present) != 1:
        names = ", ".join(allowed)
        return [
            FieldError(
                field, "one_identifier", f"{field} must hold exactly one of: {names}", 1, len(ident)
            )
        ]
    return check_identifier(ident[present[0]], f"{field}.{present[0]}", limits)


def check_attributes(attrs: object, field: str, limits: Limits) -> list[FieldError]:
    """Attribute count, name bytes and value bytes (values measured as sent)."""
    if attrs is None:
        return []
    if not isinstance(attrs, dict):
        return [FieldError(field, "type", f"{field} must be an object")]
    errors: list[FieldError] = []
    if len(attrs) > limits.max_attributes:
        errors.append(
            FieldError(
                field,
                "max_items",
                f"{field} holds over {limits.max_attributes} attributes",
                limits.max_attributes,
                len(attrs),
            )
        )
    for name, value in attrs.items():
        if _nbytes(name) > limits.max_attr_name_bytes:
            errors.append(
                FieldError(
                    f"{field}.{name}",
                    "max_bytes",
                    f"attribute name over {limits.max_attr_name_bytes} bytes",
                    limits.max_attr_name_bytes,
                    _nbytes(name),
                )
            )
        size = _nbytes(value) if isinstance(value, str) else len(orjson.dumps(value))
        if size > limits.max_attr_value_bytes:
            errors.append(
                FieldError(
                    f"{field}.{name}",
                    "max_bytes",
                    f"attribute value over {limits.max_attr_value_bytes} bytes",
                    limits.max_attr_value_bytes,
                    size,
                )
            )
    return errors


def check_event(op: dict[str, Any], where: str, limits: Limits) -> list[FieldError]:
    errors: list[FieldError] = []
    name = op.get("name")
    field = _path(where, "name")
    if not isinstance(name, str) or not name.strip():
        errors.append(FieldError(field, "required", "name must be a non-empty string"))
    elif _nbytes(name) > limits.max_event_name_bytes:
        errors.append(
            FieldError(
                field,
                "max_bytes",
                f"name is over {limits.max_event_name_bytes} bytes",
                limits.max_event_name_bytes,
                _nbytes(name),
            )
        )
    attrs = op.get("attributes")
    field = _path(where, "attributes")
    if attrs is not None:
        if not isinstance(attrs, dict):
            errors.append(FieldError(field, "type", "event data must be an object"))
        else:
            size = len(orjson.dumps(attrs))
            if size > limits.max_event_data_bytes:
                errors.append(
                    FieldError(
                        field,
                        "max_bytes",
                        f"event data is over {limits.max_event_data_bytes} bytes",
                        limits.max_event_data_bytes,
                        size,
                    )
                )
    if "id" in op and not is_ulid(op["id"]):
        errors.append(FieldError(_path(where, "id"), "format", "id must be a ULID"))
    return errors


def _check_device(op: dict[str, Any], where: str, *, full: bool) -> list[FieldError]:
    device = op.get("device")
    field = _path(where, "device")
    if not isinstance(device, dict):
        return [FieldError(field, "required", "device must be an object")]
    errors: list[FieldError] = []
    if not isinstance(device.get("token"), str) or not device["token"]:
        errors.append(FieldError(f"{field}.token", "required", "device.token is required"))
    if full:
        if device.get("platform") not in ("ios", "android"):
            errors.append(
                FieldError(f"{field}.platform", "enum", "device.platform must be ios or android")
            )
        if "last_used" in device:
            err = check_seconds(device["last_used"], f"{field}.last_used")
            errors.extend([err] if err else [])
        attrs = device.get("attributes")
        if attrs is not None and (
            not isinstance(attrs, dict) or not all(isinstance(v, str) for v in attrs.values())
        ):
            errors.append(
                FieldError(
                    f"{field}.attributes", "type", "device attributes must be an object of strings"
                )
            )
    return errors


def _check_relationships(op: dict[str, Any], where: str, required: bool) -> list[FieldError]:
    rels = op.get("cio_relationships")
    field = _path(where, "cio_relationships")
    if rels is None and not required:
        return []
    if not isinstance(rels, list) or not rels:
        return [FieldError(field, "required", "cio_relationships must be a non-empty list")]
    return [
        FieldError(f"{field}[{i}].identifiers", "required", "each relationship needs identifiers")
        for i, r in enumerate(rels)
        if not isinstance(r, dict) or not isinstance(r.get("identifiers"), dict)
    ]


def _check_person(op: dict[str, Any], where: str, limits: Limits) -> list[FieldError]:
    action = op["action"]
    if action == "merge":
        errors = check_one_of(op.get("primary"), _path(where, "primary"), MERGE_IDS, limits)
        errors += check_one_of(op.get("secondary"), _path(where, "secondary"), MERGE_IDS, limits)
        return errors
    allowed = (*PERSON_IDS, "anonymous_id") if action in EVENTS else PERSON_IDS
    errors = check_one_of(op.get("identifiers"), _path(where, "identifiers"), allowed, limits)
    if action in EVENTS:
        errors += check_event(op, where, limits)
    elif action == "identify":
        errors += check_attributes(op.get("attributes"), _path(where, "attributes"), limits)
        errors += _check_relationships(op, where, required=False)
    elif action in ("add_device", "delete_device"):
        errors += _check_device(op, where, full=action == "add_device")
    elif action in ("add_relationships", "delete_relationships"):
        errors += _check_relationships(op, where, required=True)
    return errors


def _check_object(op: dict[str, Any], where: str, limits: Limits) -> list[FieldError]:
    ident = op.get("identifiers")
    field = _path(where, "identifiers")
    errors: list[FieldError] = []
    if isinstance(ident, dict) and set(ident) == {"cio_object_id"}:
        errors += check_identifier(ident["cio_object_id"], f"{field}.cio_object_id", limits)
    elif isinstance(ident, dict) and set(ident) == {"object_type_id", "object_id"}:
        errors += check_identifier(ident["object_type_id"], f"{field}.object_type_id", limits)
        errors += check_identifier(ident["object_id"], f"{field}.object_id", limits)
    else:
        errors.append(
            FieldError(
                field,
                "one_identifier",
                "object identifiers must be {object_type_id, object_id} or {cio_object_id}",
            )
        )
    if op["action"] == "identify":
        errors += check_attributes(op.get("attributes"), _path(where, "attributes"), limits)
    if op["action"] in ("add_relationships", "delete_relationships", "identify_anonymous"):
        errors += _check_relationships(op, where, required=True)
    return errors


def _check_delivery(op: dict[str, Any], where: str, limits: Limits) -> list[FieldError]:
    errors = check_one_of(op.get("identifiers"), _path(where, "identifiers"), ("id",), limits)
    if op.get("name") not in DELIVERY_METRICS:
        errors.append(
            FieldError(_path(where, "name"), "enum", "name must be opened, converted or delivered")
        )
    attrs = op.get("attributes")
    if not isinstance(attrs, dict) or not isinstance(attrs.get("device_token"), str):
        errors.append(
            FieldError(
                _path(where, "attributes.device_token"),
                "required",
                "delivery events need attributes.device_token",
            )
        )
    return errors


def validate_op(
    op: object, *, where: str = "", limits: Limits = DEFAULT_LIMITS
) -> list[FieldError]:
    """Every rule `op` breaks, as field errors; an empty list means it is valid."""
    if not isinstance(op, dict):
        return [FieldError(where or "op", "type", "an operation must be a JSON object")]
    kind, action = op.get("type"), op.get("action")
    if kind not in ACTIONS:
        return [FieldError(_path(where, "type"), "enum", "type must be person, object or delivery")]
    if not isinstance(action, str) or action not in ACTIONS[kind]:
        allowed = ", ".join(sorted(ACTIONS[kind]))
        return [
            FieldError(_path(where, "action"), "enum", f"{kind} action must be one of: {allowed}")
        ]
    errors: list[FieldError] = []
    if "timestamp" in op:
        err = check_seconds(op["timestamp"], _path(where, "timestamp"))
        errors.extend([err] if err else [])
    if kind == "person":
        return errors + _check_person(op, where, limits)
    if kind == "object":
        return errors + _check_object(op, where, limits)
    return errors + _check_delivery(op, where, limits)


def op_size_error(
    payload: bytes, *, where: str, limits: Limits = DEFAULT_LIMITS
) -> FieldError | None:
    """The per-op size rule, on the exact bytes that will be sent."""
    if len(payload) <= limits.max_op_bytes:
        return None
    return FieldError(
        where or "op",
        "max_bytes",
        f"operation is over {limits.max_op_bytes} bytes",
        limits.max_op_bytes,
        len(payload),
    )
