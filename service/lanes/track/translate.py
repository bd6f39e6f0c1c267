"""v1 Track API calls → the one v2 operation each becomes, as pure functions.

Every function validates the op it builds with `validate_op` and raises `InvalidRequest`
naming the field as the producer sent it (``data``, ``device.id``, ``_timestamp``,
``identifier`` for the path value), never the v2 name it became.

Choices where Customer.io's documentation is silent:

* Identify with ``cio_relationships.action: delete_relationships`` becomes a person
  ``delete_relationships`` op. With other fields it becomes two ops, the identify and
  then the delete, both of the person's shard (`identify_ops`); a strict workspace
  refuses it instead, keeping one call one op.
* An integer ``id`` in an identify body (the Ruby SDK sends what it is given) becomes
  its decimal string, as v2 identifiers are strings.
* Unknown keys of translated bodies are dropped, as Customer.io drops them (refused
  when ``limits.strict``); bodies forwarded to v1 unchanged (invites, metrics,
  segments) keep theirs. A v1 device's top-level extras that are not strings, numbers
  or booleans cannot become device attributes and are dropped (refused when strict).
* Device attributes, in ``device.attributes`` or (as the SDKs send them) at the
  device's top level, become strings: ``"true"``/``"false"``, decimal numbers.
  ``device.attributes`` wins a clash.
* Push events and metrics: see `service.lanes.track.delivery_events`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

from service.errors import FieldError, InvalidRequest
from service.jobs import new_event_id
from service.lanes.track.limits import DEFAULT_LIMITS, Limits
from service.lanes.track.validation import drop_unknown, validate_op
from service.lanes.track.validation_rules import (
    EVENT_TYPES,
    check_event_fields,
    check_string,
    invalid,
    key_path,
    not_one_of,
    required,
    unknown_fields,
    wrong_type,
)

RELATIONSHIP_ACTIONS = ("add_relationships", "delete_relationships")

_TRACK_FIELDS = frozenset({"name", "id", "type", "timestamp", "data"})
_ANONYMOUS_FIELDS = _TRACK_FIELDS | {"anonymous_id"}
_DEVICE_FIELDS = ("id", "platform", "last_used", "attributes")

_V1_HINTS = {
    "attributes": "v1 event data goes in 'data'",
    "identifiers": "the person is named in the request path",
}

#: ``(v2 path, v1 path)``: a field equal to or under the v2 path is renamed; an empty
#: v1 path means the v2 object's keys were the v1 body's own top-level keys.
Renames = tuple[tuple[str, str], ...]

_EVENT_RENAMES: Renames = (("attributes", "data"),)
_ANONYMOUS_RENAMES: Renames = (("identifiers.anonymous_id", "anonymous_id"), *_EVENT_RENAMES)
_IDENTIFY_RENAMES: Renames = (
    ("timestamp", "_timestamp"),
    ("cio_relationships", "cio_relationships.relationships"),
    ("attributes", ""),
)


def _renamed(error: FieldError, renames: Renames) -> FieldError:
    field = error.field
    for old, new in renames:
        if field == old:
            new_field = new or "body"
        elif field.startswith(old) and field[len(old)] in ".[":
            rest = field[len(old) :]
            new_field = new + rest if new else rest[1:]
        else:
            continue
        message = error.message
        if message.startswith(field):
            message = new_field + message[len(field) :]
        return replace(error, field=new_field, message=message)
    return error


def finish_op(
    op: dict[str, Any], errors: list[FieldError], renames: Renames, limits: Limits
) -> dict[str, Any]:
    """`op` once it validates; else InvalidRequest with v1 names for every error."""
    if not limits.strict:
        op = cast(dict[str, Any], drop_unknown(op))
    found = validate_op(op, limits=limits)
    if found:
        errors = errors + [_renamed(e, renames) for e in found]
    if errors:
        raise InvalidRequest(errors)
    return op


def body_object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest([wrong_type("body", "a JSON object", body)])
    return body


def identifiers_from_path(raw: str, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, str]:
    """The v2 identifiers of a percent-decoded v1 path value: cio_id, email or id."""
    if raw.startswith("cio_"):
        name, value = "cio_id", raw[4:]
    elif "@" in raw:
        name, value = "email", raw
    else:
        name, value = "id", raw
    errors: list[FieldError] = []
    ok = check_string(value, "identifier", errors, max_bytes=limits.max_id_bytes)
    if ok and name == "cio_id" and not (value.isascii() and value.isalnum()):
        message = "identifier must be cio_ followed by letters and digits only"
        errors.append(FieldError("identifier", "format", message))
    if errors:
        raise InvalidRequest(errors)
    return {name: value}


def _person_op(action: str, identifier: str, limits: Limits) -> dict[str, Any]:
    identifiers = identifiers_from_path(identifier, limits=limits)
    return {"type": "person", "action": action, "identifiers": identifiers}


def identify(identifier: str, body: object, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """``PUT /customers/{identifier}`` → person identify (or delete_relationships)."""
    op = _person_op("identify", identifier, limits)
    data = body_object(body)
    errors: list[FieldError] = []
    rel_action, relationships = (
        _v1_relationships(data["cio_relationships"], errors, strict=limits.strict)
        if "cio_relationships" in data
        else (None, None)
    )
    if rel_action == "delete_relationships" and relationships is not None:
        others = sorted(str(key) for key in data if key != "cio_relationships")
        if others:
            message = (
                "cio_relationships.action delete_relationships becomes its own v2 operation, "
                f"so it cannot come with other fields ({', '.join(others)}); "
                "send those in a separate identify"
            )
            errors.append(FieldError("cio_relationships.action", "enum", message))
        op["action"] = "delete_relationships"
        op["cio_relationships"] = relationships
        return finish_op(op, errors, _IDENTIFY_RENAMES, limits)
    attributes = {k: v for k, v in data.items() if k not in ("_timestamp", "cio_relationships")}
    if type(attributes.get("id")) is int:
        attributes["id"] = str(attributes["id"])
    if attributes:
        op["attributes"] = attributes
    if "_timestamp" in data:
        op["timestamp"] = data["_timestamp"]
    if relationships is not None:
        op["cio_relationships"] = relationships
    return finish_op(op, errors, _IDENTIFY_RENAMES, limits)


def identify_ops(
    identifier: str, body: object, *, limits: Limits = DEFAULT_LIMITS
) -> list[dict[str, Any]]:
    """``PUT /customers/{identifier}`` → its v2 op, or identify then delete_relationships."""
    data = body_object(body)
    relationships = data.get("cio_relationships")
    if (
        limits.strict
        or len(data) < 2
        or not isinstance(relationships, dict)
        or relationships.get("action") != "delete_relationships"
    ):
        return [identify(identifier, data, limits=limits)]
    rest = {k: v for k, v in data.items() if k != "cio_relationships"}
    return [
        identify(identifier, rest, limits=limits),
        identify(identifier, {"cio_relationships": relationships}, limits=limits),
    ]


def _v1_relationships(
    value: object, errors: list[FieldError], *, strict: bool
) -> tuple[str | None, object]:
    """The action and relationship list of v1 ``cio_relationships``; None where broken."""
    if not isinstance(value, dict):
        errors.append(wrong_type("cio_relationships", "an object {action, relationships}", value))
        return None, None
    if strict:
        fields = ("action", "relationships")
        errors.extend(unknown_fields(value, fields, "cio_relationships", "cio_relationships"))
    action = value.get("action")
    if action not in RELATIONSHIP_ACTIONS:
        path = "cio_relationships.action"
        errors.append(invalid(path, action, "a string", RELATIONSHIP_ACTIONS))
        action = None
    relationships = value.get("relationships")
    if relationships is None:
        errors.append(required("cio_relationships.relationships"))
    return action, relationships


def delete(identifier: str, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """``DELETE /customers/{identifier}`` → person delete."""
    return finish_op(_person_op("delete", identifier, limits), [], (), limits)


def suppress(identifier: str, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """``POST /customers/{identifier}/suppress`` → person suppress."""
    return finish_op(_person_op("suppress", identifier, limits), [], (), limits)


def unsuppress(identifier: str, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """``POST /customers/{identifier}/unsuppress`` → person unsuppress."""
    return finish_op(_person_op("unsuppress", identifier, limits), [], (), limits)


def _event(identifiers: dict[str, Any], data: dict[str, Any], limits: Limits) -> dict[str, Any]:
    anonymous = "anonymous_id" in identifiers
    allowed = _ANONYMOUS_FIELDS if anonymous else _TRACK_FIELDS
    renames = _ANONYMOUS_RENAMES if anonymous else _EVENT_RENAMES
    errors: list[FieldError] = []
    if limits.strict and not allowed.issuperset(data):
        errors.extend(unknown_fields(data, allowed, "", "a v1 event", hints=_V1_HINTS))
    action = _event_type(data, errors)
    op: dict[str, Any] = {
        "type": "person",
        "action": action,
        "identifiers": identifiers,
        "name": data.get("name"),
        "id": data["id"] if "id" in data else new_event_id(),
    }
    if "timestamp" in data:
        op["timestamp"] = data["timestamp"]
    if "data" in data:
        op["attributes"] = data["data"]
    return finish_op(op, errors, renames, limits)


def _event_type(data: dict[str, Any], errors: list[FieldError]) -> str:
    kind = data.get("type", "event")
    if kind in EVENT_TYPES:
        return str(kind)
    # Optional, so a null type is a wrong type, not a missing one.
    if isinstance(kind, str):
        errors.append(not_one_of("type", EVENT_TYPES, kind))
    else:
        errors.append(wrong_type("type", "a string", kind))
    return "event"


def track(identifier: str, body: object, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """``POST /customers/{identifier}/events`` → person event, page or screen (by ``type``)."""
    identifiers = identifiers_from_path(identifier, limits=limits)
    return _event(identifiers, body_object(body), limits)


def track_anonymous(body: object, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any] | None:
    """``POST /events`` → person event by ``anonymous_id``; None for an invite event.

    An invite (no ``anonymous_id``) has no v2 equivalent: the caller checks it with
    `check_anonymous_v1` and forwards it to v1 unchanged.
    """
    data = body_object(body)
    if "anonymous_id" not in data:
        return None
    identifiers = {"anonymous_id": data["anonymous_id"]}
    return _event(identifiers, data, limits)


def check_anonymous_v1(body: object, *, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise InvalidRequest if an anonymous event forwarded to v1 breaks a documented limit."""
    data = body_object(body)
    errors: list[FieldError] = []
    _event_type(data, errors)
    check_event_fields(data, "", limits, errors, data_key="data")
    if errors:
        raise InvalidRequest(errors)


def add_device(identifier: str, body: object, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """``PUT /customers/{identifier}/devices`` → person add_device (``device.id`` → ``token``)."""
    op = _person_op("add_device", identifier, limits)
    data = body_object(body)
    errors = (
        unknown_fields(data, ("device",), "", "a v1 add_device body", hints=_V1_HINTS)
        if limits.strict
        else []
    )
    device = data.get("device")
    if not isinstance(device, dict):
        errors.append(invalid("device", device, "an object"))
        raise InvalidRequest(errors)
    v2_device: dict[str, Any] = {"token": device.get("id"), "platform": device.get("platform")}
    if "last_used" in device:
        v2_device["last_used"] = device["last_used"]
    renames: list[tuple[str, str]] = [("device.token", "device.id")]
    explicit = device.get("attributes", {})
    if not isinstance(explicit, dict):
        errors.append(wrong_type("device.attributes", "an object", explicit))
        explicit = {}
    attributes: dict[str, Any] = {}
    for key, value in device.items():
        if key in _DEVICE_FIELDS or key in explicit:
            continue
        if not limits.strict and (key == "token" or not _is_scalar(value)):
            continue
        if key == "token":
            message = "device.token is not a v1 device field; v1 sends the token as device.id"
            errors.append(FieldError("device.token", "unknown_field", message))
            continue
        attributes[key] = _device_string(value)
        renames.append((key_path("device.attributes", key), key_path("device", key)))
    attributes.update((key, _device_string(value)) for key, value in explicit.items())
    if attributes:
        v2_device["attributes"] = attributes
    op["device"] = v2_device
    return finish_op(op, errors, tuple(renames), limits)


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float)  # bool is an int


def _device_string(value: object) -> object:
    """A device attribute as the string v2 requires; other JSON is left for validation."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def delete_device(
    identifier: str, device_id: str, *, limits: Limits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """``DELETE /customers/{identifier}/devices/{device_id}`` → person delete_device."""
    op = _person_op("delete_device", identifier, limits)
    op["device"] = {"token": device_id}
    return finish_op(op, [], (("device.token", "device_id"),), limits)


def merge(body: object, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """``POST /merge_customers`` → person merge (same ``primary``/``secondary``)."""
    data = body_object(body)
    errors = (
        unknown_fields(data, ("primary", "secondary"), "", "a v1 merge body")
        if limits.strict
        else []
    )
    op = {"type": "person", "action": "merge"} | {k: data.get(k) for k in ("primary", "secondary")}
    return finish_op(op, errors, (), limits)


def ensure_event_id(op: dict[str, Any]) -> dict[str, Any]:
    """`op`, or a copy with a fresh ULID ``id`` if it is an event that has none.

    Events are person event/page/screen and delivery event; an existing ``id`` is
    never changed, so a producer's retry keeps deduplicating.
    """
    if "id" in op:
        return op
    kind = op.get("type")
    action = op.get("action")
    if (kind == "person" and action in EVENT_TYPES) or (kind == "delivery" and action == "event"):
        return {**op, "id": new_event_id()}
    return op


def segment_ids(body: object, *, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise InvalidRequest unless ``ids`` holds 1 to max_segment_ids non-empty strings."""
    data = body_object(body)
    ids = data.get("ids")
    errors: list[FieldError] = []
    if not isinstance(ids, list):
        errors.append(invalid("ids", ids, "an array"))
    elif not ids:
        errors.append(FieldError("ids", "min_items", "ids must hold at least one id", 1, 0))
    elif len(ids) > limits.max_segment_ids:
        message = f"ids has {len(ids)} ids; Customer.io takes at most {limits.max_segment_ids}"
        errors.append(FieldError("ids", "max_items", message, limits.max_segment_ids, len(ids)))
    else:
        for i, item in enumerate(ids):
            check_string(item, f"ids[{i}]", errors, max_bytes=limits.max_id_bytes)
    if errors:
        raise InvalidRequest(errors)
