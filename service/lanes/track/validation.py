"""Validation of v2 operations against Customer.io's schemas and documented limits.

Pure: an operation in, a list of `FieldError`s out (empty when it is valid). Field
paths are dotted and prefixed with ``where`` (``batch[3].identifiers.id``).

Every rule is Customer.io's (docs/validation-rules.md, with its evidence) unless
``limits.strict`` (the workspace's ``strict_validation``) turns on cioq's extra checks:

* Unknown fields (top level, ``device``, relationship entries, identifier objects) are
  dropped by `drop_unknown`, as Customer.io drops them; strict refuses them
  (``unknown_field``): ``data`` instead of ``attributes`` loses the event data.
  Free-form bags (``attributes``, ``relationship_attributes``, ``device.attributes``)
  take any key either way.
* Strict only: event ``id`` must be a ULID; ``cio_relationships`` of add/delete
  relationships and identify_anonymous must not be empty, and identify_anonymous must
  name its people; ``device.token`` must not be empty; timestamps must not look like
  milliseconds or fall before 1970, nor be spelled as decimals.

Choices where Customer.io's documentation is silent:

* A missing or null required field is ``required``; an optional field sent as null is
  refused like any other wrong type, since the op is forwarded as it is.
* Person events, pages and screens also take ``{"anonymous_id": ...}`` as their one
  identifier (Segment and RudderStack send it); ``anonymous_id`` is held to
  ``max_id_bytes`` like every other identifier, and so is a delivery id.
* Delivery events may carry ``id`` and ``timestamp`` like person events, so a retried
  batch cannot count a push metric twice.
* Object ``identify_anonymous`` takes its people as
  ``cio_relationships[].identifiers.anonymous_id`` (the schema) or a top-level
  ``anonymous_id`` (Customer.io's own example).
* The serialized size of an op is not checked here: the caller serializes the op once
  to store it and passes those bytes to `op_size_error`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.errors import FieldError
from service.lanes.track.limits import DEFAULT_LIMITS, Limits
from service.lanes.track.validation_rules import (
    ANONYMOUS_KEYS,
    DELIVERY_METRICS,
    PERSON_EVENT_KEYS,
    PERSON_KEYS,
    PERSON_REF_KEYS,
    check_attributes,
    check_event_fields,
    check_event_id,
    check_object_identifiers,
    check_person_identifiers,
    check_seconds,
    check_string,
    invalid,
    key_path,
    not_one_of,
    unknown_fields,
    wrong_type,
)

#: ``check(op, prefix, limits, errors)``; ``prefix`` is ``where`` plus a dot, or "".
Check = Callable[[dict[str, Any], str, Limits, list[FieldError]], None]


@dataclass(frozen=True, slots=True)
class _Action:
    fields: frozenset[str]
    check: Check


#: Why a top-level field is unknown, where a near-miss spelling would not say it.
_OP_HINTS = {
    "data": "event data goes in 'attributes'",
    "anonymous_id": (
        "anonymous people go in 'identifiers' of person event/page/screen, or in "
        "'cio_relationships' of object identify_anonymous"
    ),
    "identifiers": "merge names its people in 'primary' and 'secondary'",
}
_DEVICE_FIELDS = frozenset({"token", "platform", "last_used", "attributes"})
_RELATIONSHIP_FIELDS = frozenset({"identifiers", "relationship_attributes"})
_PLATFORMS = ("ios", "android")
_PUSH_ENABLED = ("true", "false")


def _check_device(
    value: object, path: str, errors: list[FieldError], *, full: bool, strict: bool
) -> None:
    """An add_device ``device`` (``full``) or a delete_device one (token only)."""
    if not isinstance(value, dict):
        errors.append(invalid(path, value, "an object"))
        return
    allowed = _DEVICE_FIELDS if full else ("token",)
    if not all(key in allowed for key in value):
        errors.extend(unknown_fields(value, allowed, path, "a device"))
    token = value.get("token")
    if strict or token != "":
        check_string(token, f"{path}.token", errors)
    if not full:
        return
    platform = value.get("platform")
    if platform not in _PLATFORMS:
        errors.append(invalid(f"{path}.platform", platform, "a string", _PLATFORMS))
    if "last_used" in value:
        check_seconds(value["last_used"], f"{path}.last_used", errors, strict=strict)
    if "attributes" in value:
        _check_device_attributes(value["attributes"], f"{path}.attributes", errors)


def _check_device_attributes(value: object, path: str, errors: list[FieldError]) -> None:
    """String values only; ``push_enabled`` is the string "true" or "false"."""
    if not isinstance(value, dict):
        errors.append(wrong_type(path, "an object", value))
        return
    for name, item in value.items():
        item_path = key_path(path, str(name))
        if not isinstance(item, str):
            errors.append(wrong_type(item_path, "a string", item))
        elif name == "push_enabled" and item not in _PUSH_ENABLED:
            errors.append(not_one_of(item_path, _PUSH_ENABLED, item))


def _check_relationships(
    value: object,
    path: str,
    limits: Limits,
    errors: list[FieldError],
    *,
    people: tuple[str, ...] | None,
    allow_empty: bool,
) -> None:
    """A list of ``{identifiers, relationship_attributes?}``.

    ``people`` is the identifier keys of the related people (relationships of an
    object); None means the related things are objects (relationships of a person).
    """
    if not isinstance(value, list):
        errors.append(invalid(path, value, "an array"))
        return
    if not value and not allow_empty and limits.strict:
        message = f"{path} must hold at least one relationship"
        errors.append(FieldError(path, "min_items", message, 1, 0))
        return
    for i, entry in enumerate(value):
        entry_path = f"{path}[{i}]"
        if not isinstance(entry, dict):
            errors.append(wrong_type(entry_path, "an object", entry))
            continue
        if not _RELATIONSHIP_FIELDS.issuperset(entry):
            errors.extend(unknown_fields(entry, _RELATIONSHIP_FIELDS, entry_path, "a relationship"))
        ident_path = f"{entry_path}.identifiers"
        if people is None:
            check_object_identifiers(entry.get("identifiers"), ident_path, limits, errors)
        else:
            check_person_identifiers(entry.get("identifiers"), ident_path, people, limits, errors)
        if "relationship_attributes" in entry:
            check_attributes(
                entry["relationship_attributes"],
                f"{entry_path}.relationship_attributes",
                limits,
                errors,
                total_limit=limits.max_object_attrs_bytes,
            )


def _person_identify(op: dict[str, Any], p: str, limits: Limits, errors: list[FieldError]) -> None:
    check_person_identifiers(op.get("identifiers"), p + "identifiers", PERSON_KEYS, limits, errors)
    if "attributes" in op:
        attrs = op["attributes"]
        check_attributes(attrs, p + "attributes", limits, errors)
        if isinstance(attrs, dict) and not isinstance(attrs.get("_update", False), bool):
            errors.append(wrong_type(p + "attributes._update", "true or false", attrs["_update"]))
    if "timestamp" in op:
        check_seconds(op["timestamp"], p + "timestamp", errors, strict=limits.strict)
    if "cio_relationships" in op:
        _check_relationships(
            op["cio_relationships"],
            p + "cio_relationships",
            limits,
            errors,
            people=None,
            allow_empty=True,
        )


def _person(op: dict[str, Any], p: str, limits: Limits, errors: list[FieldError]) -> None:
    check_person_identifiers(op.get("identifiers"), p + "identifiers", PERSON_KEYS, limits, errors)


def _person_event(op: dict[str, Any], p: str, limits: Limits, errors: list[FieldError]) -> None:
    ident_path = p + "identifiers"
    check_person_identifiers(op.get("identifiers"), ident_path, PERSON_EVENT_KEYS, limits, errors)
    check_event_fields(op, p, limits, errors)


def _person_relationships(
    op: dict[str, Any], p: str, limits: Limits, errors: list[FieldError]
) -> None:
    check_person_identifiers(op.get("identifiers"), p + "identifiers", PERSON_KEYS, limits, errors)
    _check_relationships(
        op.get("cio_relationships"),
        p + "cio_relationships",
        limits,
        errors,
        people=None,
        allow_empty=False,
    )


def _person_add_device(
    op: dict[str, Any], p: str, limits: Limits, errors: list[FieldError]
) -> None:
    check_person_identifiers(op.get("identifiers"), p + "identifiers", PERSON_KEYS, limits, errors)
    _check_device(op.get("device"), p + "device", errors, full=True, strict=limits.strict)


def _person_delete_device(
    op: dict[str, Any], p: str, limits: Limits, errors: list[FieldError]
) -> None:
    check_person_identifiers(op.get("identifiers"), p + "identifiers", PERSON_KEYS, limits, errors)
    _check_device(op.get("device"), p + "device", errors, full=False, strict=limits.strict)


def _person_merge(op: dict[str, Any], p: str, limits: Limits, errors: list[FieldError]) -> None:
    check_person_identifiers(op.get("primary"), p + "primary", PERSON_REF_KEYS, limits, errors)
    check_person_identifiers(op.get("secondary"), p + "secondary", PERSON_REF_KEYS, limits, errors)


def _object_common(op: dict[str, Any], p: str, limits: Limits, errors: list[FieldError]) -> None:
    """Identifiers and attributes, checked alike by both object identify actions."""
    check_object_identifiers(op.get("identifiers"), p + "identifiers", limits, errors)
    if "attributes" in op:
        total = limits.max_object_attrs_bytes
        check_attributes(op["attributes"], p + "attributes", limits, errors, total_limit=total)


def _object_identify(op: dict[str, Any], p: str, limits: Limits, errors: list[FieldError]) -> None:
    _object_common(op, p, limits, errors)
    if "cio_relationships" in op:
        _check_relationships(
            op["cio_relationships"],
            p + "cio_relationships",
            limits,
            errors,
            people=PERSON_REF_KEYS,
            allow_empty=True,
        )


def _object_identify_anonymous(
    op: dict[str, Any], p: str, limits: Limits, errors: list[FieldError]
) -> None:
    _object_common(op, p, limits, errors)
    if "anonymous_id" in op:
        check_string(op["anonymous_id"], p + "anonymous_id", errors, max_bytes=limits.max_id_bytes)
    if "cio_relationships" not in op and "anonymous_id" not in op and limits.strict:
        message = f"{p}cio_relationships (the anonymous people to relate) is required"
        errors.append(FieldError(p + "cio_relationships", "required", message))
    elif "cio_relationships" in op:
        _check_relationships(
            op["cio_relationships"],
            p + "cio_relationships",
            limits,
            errors,
            people=ANONYMOUS_KEYS,
            allow_empty=False,
        )


def _object(op: dict[str, Any], p: str, limits: Limits, errors: list[FieldError]) -> None:
    check_object_identifiers(op.get("identifiers"), p + "identifiers", limits, errors)


def _object_relationships(
    op: dict[str, Any], p: str, limits: Limits, errors: list[FieldError]
) -> None:
    check_object_identifiers(op.get("identifiers"), p + "identifiers", limits, errors)
    _check_relationships(
        op.get("cio_relationships"),
        p + "cio_relationships",
        limits,
        errors,
        people=PERSON_REF_KEYS,
        allow_empty=False,
    )


def _delivery_event(op: dict[str, Any], p: str, limits: Limits, errors: list[FieldError]) -> None:
    check_person_identifiers(op.get("identifiers"), p + "identifiers", ("id",), limits, errors)
    name = op.get("name")
    if name not in DELIVERY_METRICS:
        errors.append(invalid(p + "name", name, "a string", DELIVERY_METRICS))
    attrs = op.get("attributes")
    if isinstance(attrs, dict):
        # Present and a string; "" is taken, as for a device's token (SPEC: `type: string`,
        # no minLength; docs/validation-rules.md).
        token = attrs.get("device_token")
        if token is None:
            errors.append(
                FieldError(
                    p + "attributes.device_token",
                    "required",
                    f"{p}attributes.device_token must be present",
                )
            )
        elif not isinstance(token, str):
            errors.append(invalid(p + "attributes.device_token", token, "a string"))
    else:
        errors.append(invalid(p + "attributes", attrs, "an object"))
    if "id" in op:
        check_event_id(op["id"], p + "id", limits, errors)
    if "timestamp" in op:
        check_seconds(op["timestamp"], p + "timestamp", errors, strict=limits.strict)


def _action(check: Check, *fields: str) -> _Action:
    return _Action(frozenset(("type", "action", *fields)), check)


_EVENT_FIELDS = ("identifiers", "name", "id", "timestamp", "attributes")

_ACTIONS: dict[tuple[str, str], _Action] = {
    ("person", "identify"): _action(
        _person_identify, "identifiers", "attributes", "timestamp", "cio_relationships"
    ),
    ("person", "delete"): _action(_person, "identifiers"),
    ("person", "event"): _action(_person_event, *_EVENT_FIELDS),
    ("person", "screen"): _action(_person_event, *_EVENT_FIELDS),
    ("person", "page"): _action(_person_event, *_EVENT_FIELDS),
    ("person", "add_relationships"): _action(
        _person_relationships, "identifiers", "cio_relationships"
    ),
    ("person", "delete_relationships"): _action(
        _person_relationships, "identifiers", "cio_relationships"
    ),
    ("person", "add_device"): _action(_person_add_device, "identifiers", "device"),
    ("person", "delete_device"): _action(_person_delete_device, "identifiers", "device"),
    ("person", "merge"): _action(_person_merge, "primary", "secondary"),
    ("person", "suppress"): _action(_person, "identifiers"),
    ("person", "unsuppress"): _action(_person, "identifiers"),
    ("object", "identify"): _action(
        _object_identify, "identifiers", "attributes", "cio_relationships"
    ),
    ("object", "identify_anonymous"): _action(
        _object_identify_anonymous, "identifiers", "attributes", "cio_relationships", "anonymous_id"
    ),
    ("object", "delete"): _action(_object, "identifiers"),
    ("object", "add_relationships"): _action(
        _object_relationships, "identifiers", "cio_relationships"
    ),
    ("object", "delete_relationships"): _action(
        _object_relationships, "identifiers", "cio_relationships"
    ),
    ("delivery", "event"): _action(_delivery_event, *_EVENT_FIELDS),
}

#: Each type's actions, in the order Customer.io's table lists them.
ACTIONS_BY_TYPE: dict[str, tuple[str, ...]] = {
    kind: tuple(action for k, action in _ACTIONS if k == kind)
    for kind in ("person", "object", "delivery")
}


#: The identifier keys Customer.io reads, by the kind of thing identified.
_PERSON_IDS = frozenset(PERSON_EVENT_KEYS)
_OBJECT_IDS = frozenset(("object_type_id", "object_id", "cio_object_id"))
_DELIVERY_IDS = frozenset(("id",))


def _spec(op: dict[str, Any]) -> _Action | None:
    kind = op.get("type")
    action = op.get("action")
    if isinstance(kind, str) and isinstance(action, str):
        return _ACTIONS.get((kind, action))
    return None


def _known_ids(value: object, keys: frozenset[str]) -> object:
    """An identifiers object without unknown keys; unchanged if nothing known is left."""
    if not isinstance(value, dict) or keys.issuperset(value):
        return value
    known = {k: v for k, v in value.items() if k in keys}
    return known or value


def _known_relationship(entry: object, keys: frozenset[str]) -> object:
    if not isinstance(entry, dict):
        return entry
    out = {k: v for k, v in entry.items() if k in _RELATIONSHIP_FIELDS}
    if "identifiers" in out:
        out["identifiers"] = _known_ids(out["identifiers"], keys)
    return out


def drop_unknown(op: object) -> object:
    """`op` without the fields Customer.io would drop, for a workspace that is not strict.

    Only an op whose ``type``/``action`` name an operation is changed; what is left is
    judged by `validate_op` as sent.
    """
    if not isinstance(op, dict):
        return op
    spec = _spec(op)
    if spec is None:
        return op
    # Most ops carry no unknown field: one C-level check and copy instead of a comprehension.
    out = (
        dict(op)
        if spec.fields.issuperset(op)
        else {k: v for k, v in op.items() if k in spec.fields}
    )
    kind = op["type"]
    own = _OBJECT_IDS if kind == "object" else _DELIVERY_IDS if kind == "delivery" else _PERSON_IDS
    for side in ("identifiers", "primary", "secondary"):
        if side in out:
            out[side] = _known_ids(out[side], own)
    device = out.get("device")
    if isinstance(device, dict):
        allowed = _DEVICE_FIELDS if op["action"] == "add_device" else frozenset(("token",))
        out["device"] = {k: v for k, v in device.items() if k in allowed}
    relationships = out.get("cio_relationships")
    if isinstance(relationships, list):
        related = _PERSON_IDS if kind == "object" else _OBJECT_IDS
        # An entry naming nothing to relate is dropped, as it relates nothing.
        out["cio_relationships"] = [
            _known_relationship(e, related)
            for e in relationships
            if not (isinstance(e, dict) and e.get("identifiers") is None)
        ]
    return out


def validate_op(
    op: object, *, where: str = "", limits: Limits = DEFAULT_LIMITS
) -> list[FieldError]:
    """Every rule `op` breaks as a v2 operation; empty when Customer.io should take it."""
    if not isinstance(op, dict):
        return [wrong_type(where or "op", "an object (one operation)", op)]
    kind = op.get("type")
    action = op.get("action")
    spec = _spec(op)
    prefix = f"{where}." if where else ""
    if spec is None:
        return _kind_errors(kind, action, prefix)
    errors: list[FieldError] = []
    spec.check(op, prefix, limits, errors)
    if not spec.fields.issuperset(op):
        owner = f"a {kind} {action} operation"
        errors.extend(unknown_fields(op, spec.fields, where, owner, hints=_OP_HINTS))
    return errors


def _kind_errors(kind: object, action: object, prefix: str) -> list[FieldError]:
    """Why ``type``/``action`` name no operation; the rest of the op cannot be judged."""
    errors: list[FieldError] = []
    actions = ACTIONS_BY_TYPE.get(kind) if isinstance(kind, str) else None
    if actions is None:
        errors.append(invalid(prefix + "type", kind, "a string", ACTIONS_BY_TYPE))
    if actions is not None or not isinstance(action, str):
        errors.append(invalid(prefix + "action", action, "a string", actions or ()))
    return errors


def op_size_error(
    payload: bytes, *, where: str, limits: Limits = DEFAULT_LIMITS
) -> FieldError | None:
    """The error for a serialized op over ``max_op_bytes``, or None when it fits."""
    size = len(payload)
    if size <= limits.max_op_bytes:
        return None
    field = where or "op"
    message = (
        f"{field} is {size} bytes as JSON; Customer.io takes at most "
        f"{limits.max_op_bytes} bytes per operation"
    )
    return FieldError(field, "max_bytes", message, limits.max_op_bytes, size)
