"""v1 Track API calls → the equivalent v2 operation, as pure functions.

Each function validates and raises `InvalidJob` naming the field *as the producer sent
it* (``data``, ``device.id``, ``identifier``), never the v2 name it becomes.
"""

from __future__ import annotations

from typing import Any

from service.errors import FieldError, InvalidJob
from service.jobs import new_event_id
from service.limits import DEFAULT_LIMITS, Limits
from service.validation import (
    DELIVERY_METRICS,
    EVENTS,
    check_event,
    check_identifier,
    check_seconds,
    validate_op,
)

#: v1 metric names per the Track API reference, all channels.
V1_METRICS = frozenset(
    {
        "bounced",
        "clicked",
        "converted",
        "deferred",
        "delivered",
        "dropped",
        "opened",
        "spammed",
        "failed",
        "undeliverable",
        "sent",
    }
)


def _raise_if(errors: list[FieldError], renames: dict[str, str] | None = None) -> None:
    if not errors:
        return
    renames = renames or {}
    fixed = []
    for e in errors:
        field = e.field
        for v2, v1 in renames.items():
            if field == v2 or field.startswith(v2 + "."):
                field = v1 + field[len(v2) :]
                break
        fixed.append(FieldError(field, e.rule, e.message, e.limit, e.actual))
    raise InvalidJob(fixed)


def identifiers_from_path(raw: str, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, str]:
    """The identifier a v1 path names: ``cio_<x>`` → cio_id, with ``@`` → email, else id."""
    if raw.startswith("cio_") and len(raw) > 4:
        ident = {"cio_id": raw[4:]}
    elif "@" in raw:
        ident = {"email": raw}
    else:
        ident = {"id": raw}
    _raise_if(
        check_identifier(raw, "identifier", limits)
        if raw
        else [FieldError("identifier", "required", "the identifier in the path is empty")]
    )
    return ident


def _person(action: str, identifier: str, limits: Limits, **fields: Any) -> dict[str, Any]:
    return {
        "type": "person",
        "identifiers": identifiers_from_path(identifier, limits=limits),
        "action": action,
        **fields,
    }


def identify(
    identifier: str, body: dict[str, Any], *, limits: Limits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """PUT /customers/{id}: top-level attributes; ``_timestamp`` becomes ``timestamp``."""
    attrs = dict(body)
    op = _person("identify", identifier, limits)
    if "_timestamp" in attrs:
        op["timestamp"] = attrs.pop("_timestamp")
    rels = attrs.pop("cio_relationships", None)
    if rels is not None:
        if (
            not isinstance(rels, dict)
            or rels.get("action", "add_relationships") != "add_relationships"
            or not isinstance(rels.get("relationships"), list)
        ):
            raise InvalidJob(
                [
                    FieldError(
                        "cio_relationships",
                        "format",
                        "cio_relationships must be {action: add_relationships, relationships: [..]}"
                        "; delete relationships with POST /api/v2/entity",
                    )
                ]
            )
        op["cio_relationships"] = rels["relationships"]
    op["attributes"] = attrs
    _raise_if(
        validate_op(op, limits=limits),
        {"attributes": "", "timestamp": "_timestamp", "identifiers": "identifier"},
    )
    return op


def _plain(action: str, identifier: str, limits: Limits) -> dict[str, Any]:
    return _person(action, identifier, limits)


def delete(identifier: str, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    return _plain("delete", identifier, limits)


def suppress(identifier: str, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    return _plain("suppress", identifier, limits)


def unsuppress(identifier: str, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    return _plain("unsuppress", identifier, limits)


def _event_fields(body: dict[str, Any], limits: Limits) -> dict[str, Any]:
    kind = body.get("type", "event")
    if kind not in EVENTS:
        raise InvalidJob([FieldError("type", "enum", "type must be event, page or screen")])
    if "data" in body and not isinstance(body["data"], dict):
        raise InvalidJob([FieldError("data", "type", "event data must be a hash (an object)")])
    fields: dict[str, Any] = {
        "action": kind,
        "name": body.get("name"),
        "id": body.get("id") or new_event_id(),
    }
    if body.get("data") is not None:
        fields["attributes"] = body["data"]
    if "timestamp" in body:
        fields["timestamp"] = body["timestamp"]
    return fields


def track(
    identifier: str, body: dict[str, Any], *, limits: Limits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """POST /customers/{id}/events: person event, page or screen; ``data`` → attributes."""
    fields = _event_fields(body, limits)
    op = {
        "type": "person",
        "identifiers": identifiers_from_path(identifier, limits=limits),
        **fields,
    }
    _raise_if(validate_op(op, limits=limits), {"attributes": "data"})
    return op


def track_anonymous(
    body: dict[str, Any], *, limits: Limits = DEFAULT_LIMITS
) -> dict[str, Any] | None:
    """POST /events: with anonymous_id a person event; without (invite) None → forwarded v1."""
    anon = body.get("anonymous_id")
    if anon is None:
        return None
    fields = _event_fields(body, limits)
    op = {"type": "person", "identifiers": {"anonymous_id": anon}, **fields}
    _raise_if(
        validate_op(op, limits=limits),
        {"attributes": "data", "identifiers.anonymous_id": "anonymous_id"},
    )
    return op


def check_anonymous_v1(body: dict[str, Any], *, limits: Limits = DEFAULT_LIMITS) -> None:
    """Validate an invite event that is forwarded to v1 unchanged."""
    if "data" in body and not isinstance(body["data"], dict):
        raise InvalidJob([FieldError("data", "type", "event data must be a hash (an object)")])
    probe = {
        k: v
        for k, v in (
            ("name", body.get("name")),
            ("attributes", body.get("data")),
            ("id", body.get("id")),
        )
        if v is not None or k == "name"
    }
    errors = check_event(probe, "", limits)
    if "timestamp" in body:
        err = check_seconds(body["timestamp"], "timestamp")
        errors += [err] if err else []
    _raise_if(errors, {"attributes": "data"})


def add_device(
    identifier: str, body: dict[str, Any], *, limits: Limits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """PUT /customers/{id}/devices: ``device.id`` → ``device.token``; extra keys → attributes."""
    device = body.get("device")
    if not isinstance(device, dict):
        raise InvalidJob([FieldError("device", "required", "device must be an object")])
    v2: dict[str, Any] = {}
    attrs = (
        dict(device.get("attributes") or {})
        if isinstance(device.get("attributes"), dict)
        else device.get("attributes")
    )
    for key, value in device.items():
        if key == "id":
            v2["token"] = value
        elif key in ("platform", "last_used"):
            v2[key] = value
        elif key != "attributes" and isinstance(attrs, dict):
            attrs[key] = (
                value
                if isinstance(value, str)
                else str(value).lower()
                if isinstance(value, bool)
                else str(value)
            )
    if attrs:
        v2["attributes"] = attrs
    op = _person("add_device", identifier, limits, device=v2)
    _raise_if(validate_op(op, limits=limits), {"device.token": "device.id"})
    return op


def delete_device(
    identifier: str, device_id: str, *, limits: Limits = DEFAULT_LIMITS
) -> dict[str, Any]:
    op = _person("delete_device", identifier, limits, device={"token": device_id})
    _raise_if(validate_op(op, limits=limits), {"device.token": "device_id"})
    return op


def merge(body: dict[str, Any], *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """POST /merge_customers → person merge (primary and secondary, no identifiers)."""
    op = {
        "type": "person",
        "action": "merge",
        "primary": body.get("primary"),
        "secondary": body.get("secondary"),
    }
    _raise_if(validate_op(op, limits=limits))
    return op


def push_event(body: dict[str, Any], *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """POST /push/events → delivery event with ``attributes.device_token``."""
    op: dict[str, Any] = {
        "type": "delivery",
        "action": "event",
        "identifiers": {"id": body.get("delivery_id")},
        "name": body.get("event"),
        "attributes": {"device_token": body.get("device_id")},
    }
    if "timestamp" in body:
        op["timestamp"] = body["timestamp"]
    _raise_if(
        validate_op(op, limits=limits),
        {
            "identifiers.id": "delivery_id",
            "identifiers": "delivery_id",
            "name": "event",
            "attributes.device_token": "device_id",
        },
    )
    return op


def metric(body: dict[str, Any], *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any] | None:
    """POST /metrics → a delivery event for push opened/converted/delivered, else None."""
    if body.get("metric") not in DELIVERY_METRICS or not isinstance(body.get("recipient"), str):
        return None
    op = push_event(
        {
            "delivery_id": body.get("delivery_id"),
            "event": body["metric"],
            "device_id": body["recipient"],
            **({"timestamp": body["timestamp"]} if "timestamp" in body else {}),
        },
        limits=limits,
    )
    return op


def check_metric_v1(body: dict[str, Any], *, limits: Limits = DEFAULT_LIMITS) -> None:
    errors: list[FieldError] = []
    if not isinstance(body.get("delivery_id"), str) or not body["delivery_id"]:
        errors.append(FieldError("delivery_id", "required", "delivery_id must be a string"))
    if body.get("metric") not in V1_METRICS:
        errors.append(
            FieldError("metric", "enum", f"metric must be one of: {', '.join(sorted(V1_METRICS))}")
        )
    if "timestamp" in body:
        err = check_seconds(body["timestamp"], "timestamp")
        errors += [err] if err else []
    _raise_if(errors)


def segment_ids(body: dict[str, Any], *, limits: Limits = DEFAULT_LIMITS) -> list[Any]:
    ids = body.get("ids")
    if not isinstance(ids, list) or not ids:
        raise InvalidJob(
            [
                FieldError(
                    "ids",
                    "min_items",
                    "ids must be a non-empty list",
                    1,
                    len(ids) if isinstance(ids, list) else None,
                )
            ]
        )
    if len(ids) > limits.max_segment_ids:
        raise InvalidJob(
            [
                FieldError(
                    "ids",
                    "max_items",
                    f"at most {limits.max_segment_ids} ids",
                    limits.max_segment_ids,
                    len(ids),
                )
            ]
        )
    return ids


def ensure_event_id(op: dict[str, Any]) -> dict[str, Any]:
    """Give a v2 event (person event/page/screen, delivery event) a ULID id if it has none."""
    if op.get("action") in EVENTS and not op.get("id"):
        return {**op, "id": new_event_id()}
    return op
