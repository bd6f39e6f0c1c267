"""v1 push events and delivery metrics → v2 delivery events, where one exists.

* A metric becomes a delivery event only if ``recipient`` is shaped like a push token:
  the body does not name its channel, and an email open must not count as a push
  open. Metrics with ``reason``, ``href`` or other keys stay on v1, which keeps them.
* A push event lacking (or with an empty) ``delivery_id``, ``event`` or ``device_id``
  has no v2 form; Customer.io's document makes all four optional, so, unless the
  workspace is strict, it is forwarded to v1 unchanged (unknown keys dropped) after
  `check_push_v1`.
* Push events and metrics put ``timestamp`` at the op's top level, as person events
  do, and get an ``id`` like every event.
"""

from __future__ import annotations

from typing import Any

from service.errors import FieldError, InvalidRequest
from service.jobs import new_event_id
from service.lanes.track.limits import DEFAULT_LIMITS, Limits
from service.lanes.track.translate import body_object, finish_op
from service.lanes.track.validation_rules import (
    DELIVERY_METRICS,
    check_seconds,
    check_string,
    invalid,
    is_push_token,
    unknown_fields,
    wrong_type,
)

#: Every metric the v1 metrics endpoint documents for any channel.
V1_METRICS = (*DELIVERY_METRICS, "bounced", "clicked", "deferred", "dropped", "spammed")

_PUSH_FIELDS = frozenset({"delivery_id", "event", "device_id", "timestamp"})
_PUSH_REQUIRED_V2 = ("delivery_id", "event", "device_id")
_METRIC_V2_FIELDS = frozenset({"delivery_id", "metric", "recipient", "timestamp"})
_METRIC_TEXT_FIELDS = ("reason", "href", "action_name", "action_value")
_DELIVERY_ID = ("identifiers.id", "delivery_id")


def _delivery(
    data: dict[str, Any], name: str, token: str, errors: list[FieldError], limits: Limits
) -> dict[str, Any]:
    """The delivery event whose metric is ``data[name]`` and device token ``data[token]``."""
    op: dict[str, Any] = {
        "type": "delivery",
        "action": "event",
        "identifiers": {"id": data.get("delivery_id")},
        "name": data.get(name),
        "id": new_event_id(),
    }
    if "timestamp" in data:
        op["timestamp"] = data["timestamp"]
    op["attributes"] = {"device_token": data.get(token)}
    renames = (_DELIVERY_ID, ("name", name), ("attributes.device_token", token))
    return finish_op(op, errors, renames, limits)


def push_event(body: object, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any] | None:
    """``POST /push/events`` → delivery event (``device_id`` → ``attributes.device_token``).

    None when v1 must carry it: the caller checks it with `check_push_v1`.
    """
    data = body_object(body)
    if limits.strict:
        errors = unknown_fields(data, _PUSH_FIELDS, "", "a v1 push event")
        return _delivery(data, "event", "device_id", errors, limits)
    if not all(isinstance(data.get(k), str) and data[k] for k in _PUSH_REQUIRED_V2):
        return None
    return _delivery(data, "event", "device_id", [], limits)


def check_push_v1(body: object, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The push event body forwarded to v1: known keys only, each of its documented type."""
    data = {k: v for k, v in body_object(body).items() if k in _PUSH_FIELDS}
    errors: list[FieldError] = []
    for key in ("delivery_id", "device_id"):
        if key in data and not isinstance(data[key], str):
            errors.append(wrong_type(key, "a string", data[key]))
    if "event" in data and data["event"] not in DELIVERY_METRICS:
        errors.append(invalid("event", data["event"], "a string", DELIVERY_METRICS))
    if "timestamp" in data:
        check_seconds(data["timestamp"], "timestamp", errors, strict=limits.strict)
    if errors:
        raise InvalidRequest(errors)
    return data


def metric(body: object, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any] | None:
    """``POST /metrics`` → delivery event for a push metric; None when v1 must carry it.

    The caller checks a None case with `check_metric_v1` and forwards it unchanged.
    """
    data = body_object(body)
    if (
        data.get("metric") not in DELIVERY_METRICS
        or not is_push_token(data.get("recipient"))
        or not _METRIC_V2_FIELDS.issuperset(data)
    ):
        return None
    return _delivery(data, "metric", "recipient", [], limits)


def check_metric_v1(body: object, *, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise InvalidRequest if a metric forwarded to v1 breaks the documented schema."""
    data = body_object(body)
    errors: list[FieldError] = []
    check_string(data.get("delivery_id"), "delivery_id", errors, max_bytes=limits.max_id_bytes)
    name = data.get("metric")
    if name not in V1_METRICS:
        errors.append(invalid("metric", name, "a string", V1_METRICS))
    if "timestamp" in data:
        check_seconds(data["timestamp"], "timestamp", errors, strict=limits.strict)
    if "recipient" in data and type(data["recipient"]) not in (str, int):
        errors.append(wrong_type("recipient", "a string (a number for SMS)", data["recipient"]))
    for key in _METRIC_TEXT_FIELDS:
        if key in data and not isinstance(data[key], str):
            errors.append(wrong_type(key, "a string", data[key]))
    if errors:
        raise InvalidRequest(errors)
