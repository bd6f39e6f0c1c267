"""The Track API routes' description for the OpenAPI document: body schemas and answers.

They describe what `service.lanes.track.validation` enforces; the code is the rule, this
is its description for clients.
"""

from __future__ import annotations

from service.web.describe import OBJECT, SECONDS, STR, Operation, Schema, obj, ref

_ANY_ID: Schema = {"type": ["string", "integer"]}
_ONE_IDENTIFIER: Schema = {
    "type": "object",
    "properties": {"id": _ANY_ID, "email": STR, "cio_id": STR},
    "minProperties": 1,
    "maxProperties": 1,
}
_V1_EVENT = obj(
    ("name",),
    name=STR,
    id={"type": "string", "description": "a ULID; Customer.io drops repeats"},
    type={"enum": ["event", "page", "screen"]},
    timestamp=SECONDS,
    data=OBJECT,
)

SCHEMAS: dict[str, Schema] = {
    "V1Event": _V1_EVENT,
    "V1AnonymousEvent": {
        **_V1_EVENT,
        "properties": {**_V1_EVENT["properties"], "anonymous_id": STR},
    },
    "V2Operation": {
        **obj(
            ("type", "action"),
            type={"enum": ["person", "object", "delivery"]},
            action=STR,
            identifiers=OBJECT,
            attributes=OBJECT,
            timestamp=SECONDS,
        ),
        "description": "One v2 operation, as Customer.io's /api/v2/entity takes it",
    },
}

# A push event lacking one of these is forwarded to v1 as sent (docs/validation-rules.md).
_DELIVERY_EVENT = obj(
    (),
    delivery_id=STR,
    event={"enum": ["opened", "converted", "delivered"]},
    device_id=STR,
    timestamp=SECONDS,
)
_METRIC = obj(
    ("delivery_id", "metric"),
    delivery_id=STR,
    metric=STR,
    timestamp=SECONDS,
    recipient=_ANY_ID,
    reason=STR,
    href=STR,
)
_NO_BODY: Schema = {"type": "object", "description": "ignored; the official SDK sends {}"}

OPERATIONS: dict[str, Operation] = {
    "v1.identify": Operation(
        "Add or update a person (v2 person identify)",
        {"type": "object", "description": "attributes at the top level"},
    ),
    "v1.delete": Operation("Delete a person", _NO_BODY),
    "v1.track": Operation("Track a person's event, page or screen", ref("V1Event"), True),
    "v1.add_device": Operation(
        "Add or update a person's device",
        obj(
            ("device",),
            device=obj(
                ("id",),
                id=STR,
                platform={"enum": ["ios", "android"]},
                last_used=SECONDS,
                attributes=OBJECT,
            ),
        ),
        True,
    ),
    "v1.delete_device": Operation("Delete a person's device", _NO_BODY),
    "v1.suppress": Operation("Suppress a person", _NO_BODY),
    "v1.unsuppress": Operation("Unsuppress a person", _NO_BODY),
    "v1.track_anonymous": Operation(
        "Track an anonymous or invite event", ref("V1AnonymousEvent"), True
    ),
    "v1.merge": Operation(
        "Merge two people",
        obj(("primary", "secondary"), primary=_ONE_IDENTIFIER, secondary=_ONE_IDENTIFIER),
        True,
    ),
    "v1.segment_add": Operation(
        "Add people to a manual segment (forwarded to v1)",
        obj(("ids",), ids={"type": "array", "items": _ANY_ID, "minItems": 1, "maxItems": 1000}),
        True,
        query=(("id_type", {"enum": ["id", "email", "cio_id"]}),),
    ),
    "v1.segment_remove": Operation(
        "Remove people from a manual segment (forwarded to v1)",
        obj(("ids",), ids={"type": "array", "items": _ANY_ID, "minItems": 1, "maxItems": 1000}),
        True,
        query=(("id_type", {"enum": ["id", "email", "cio_id"]}),),
    ),
    "v1.form": Operation(
        "Submit a form (forwarded to v1)", obj(("data",), data=OBJECT), True, status=204
    ),
    "v1.unsubscribe": Operation(
        "Unsubscribe from a delivery (forwarded to v1)",
        obj((), unsubscribe={"type": "boolean"}),
        True,
    ),
    "v1.push_event": Operation(
        "Report a push event (v2 delivery event when complete)", _DELIVERY_EVENT, True
    ),
    "v1.metric": Operation("Report a delivery metric", _METRIC, True),
    "v1.region": Operation(
        "The caller's region: url is this cioq, not Customer.io",
        answer=obj(
            ("url", "region", "environment_id"),
            url=STR,
            region={"enum": ["us", "eu"]},
            environment_id={"type": ["integer", "null"]},
        ),
        errors=(401, 413, 503),
    ),
    "v2.entity": Operation("One v2 operation", ref("V2Operation"), True),
    "v2.batch": Operation(
        "v2 operations; bodies past 500 kB are accepted and re-packed; none is a no-op",
        obj((), batch={"type": "array", "items": ref("V2Operation")}),
        True,
    ),
}
