"""JSON Schemas of the Pipelines calls cioq accepts, for the OpenAPI document.

They describe what `service.lanes.pipelines.validation` enforces; the code is the rule,
this is its description for clients.
"""

from __future__ import annotations

from typing import Any

from service.lanes.pipelines.validation import CALL_TYPES

Schema = dict[str, Any]

_ID: Schema = {"type": ["string", "number"]}
_ISO: Schema = {"type": "string", "format": "date-time", "description": "ISO-8601"}
_OBJ: Schema = {"type": "object"}

#: Fields every call may carry (the Segment spec's common fields).
COMMON: dict[str, Schema] = {
    "userId": _ID,
    "anonymousId": _ID,
    "messageId": {"type": "string", "description": "kept; cioq stamps a ULID when absent"},
    "timestamp": {**_ISO, "description": "kept; cioq stamps its accept time when absent"},
    "context": _OBJ,
    "integrations": _OBJ,
    "traits": _OBJ,
    "properties": _OBJ,
}
_SPECIFIC: dict[str, Schema] = {
    "identify": {},
    "track": {"event": {"type": "string", "minLength": 1}},
    "page": {"name": {"type": "string"}},
    "screen": {"name": {"type": "string"}},
    "group": {"groupId": _ID},
    "alias": {"previousId": _ID},
}
_REQUIRED: dict[str, list[str]] = {
    "track": ["event"],
    "group": ["groupId"],
    "alias": ["previousId", "userId"],
}


def call_schema(kind: str) -> Schema:
    """One call sent to ``/v1/<kind>``."""
    schema: Schema = {
        "type": "object",
        "properties": {**COMMON, "type": {"const": kind}, **_SPECIFIC[kind]},
        "description": "userId or anonymousId is required (identify: or traits.email)",
    }
    if kind in _REQUIRED:
        schema["required"] = _REQUIRED[kind]
    return schema


def batch_schema() -> Schema:
    """A ``/v1/batch`` body: calls of any type, each naming its ``type``."""
    item: Schema = {
        "oneOf": [
            {**call_schema(k), "required": ["type", *_REQUIRED.get(k, [])]} for k in CALL_TYPES
        ]
    }
    return {
        "type": "object",
        "properties": {
            "batch": {"type": "array", "items": item, "description": "none is a no-op"},
            "context": {**_OBJ, "description": "copied into every call (a call's own keys win)"},
            "integrations": _OBJ,
        },
    }


#: (route name, summary, body schema) of every Pipelines route.
OPERATIONS: list[tuple[str, str, Schema]] = [
    *((f"cdp.{k}", f"Pipelines {k} call", call_schema(k)) for k in CALL_TYPES),
    ("cdp.batch", "Pipelines calls; bodies past 500 kB are accepted and re-packed", batch_schema()),
]
