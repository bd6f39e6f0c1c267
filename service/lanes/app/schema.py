"""JSON Schemas of the App API routes, for the OpenAPI document.

They describe what `service.lanes.app.validation` enforces and what the routes answer;
the code is the rule, this is its description for clients.
"""

from __future__ import annotations

from typing import Any

from service.lanes.app.reads import READS
from service.lanes.app.validation import SEND_KINDS

Schema = dict[str, Any]

_ID: Schema = {"type": ["string", "integer"]}
_OBJ: Schema = {"type": "object"}
_BOOL: Schema = {"type": "boolean"}
_IDENTIFIERS: Schema = {
    "type": "object",
    "properties": {"id": _ID, "email": {"type": "string"}, "cio_id": {"type": "string"}},
    "minProperties": 1,
    "maxProperties": 1,
}
_COMMON: Schema = {
    "transactional_message_id": {**_ID, "description": "template id or trigger name"},
    "identifiers": _IDENTIFIERS,
    "message_data": _OBJ,
    "send_at": {"type": "integer", "description": "Unix seconds, at most 90 days ahead"},
    "disable_message_retention": _BOOL,
    "send_to_unsubscribed": _BOOL,
    "queue_draft": _BOOL,
    "language": {"type": "string"},
}
_SPECIFIC: dict[str, Schema] = {
    "email": {
        "to": {"type": "string", "description": "comma-separated; with cc and bcc at most 15"},
        "cc": {"type": "string"},
        "bcc": {"type": "string"},
        "from": {"type": "string"},
        "subject": {"type": "string"},
        "body": {"type": "string"},
        "attachments": {
            "type": "object",
            "additionalProperties": {"type": "string", "contentEncoding": "base64"},
            "description": "file name to base64 content, at most 2 MB decoded in total",
        },
    },
    "push": {"to": {"type": "string"}, "title": {"type": "string"}, "custom_device": _OBJ},
    "sms": {"to": {"type": "string", "description": "E.164 or Liquid"}},
    "whatsapp": {"to": {"type": "string", "description": "E.164 or Liquid"}},
    "in_app": {},
    "inbox_message": {},
}


def send_schema(kind: str) -> Schema:
    required = ["identifiers"] + (["transactional_message_id"] if kind != "email" else [])
    if kind in ("email", "sms", "whatsapp"):
        required.append("to")
    return {
        "type": "object",
        "properties": {**_COMMON, **_SPECIFIC[kind]},
        "required": required,
        "description": "at most 1 MB without attachments",
    }


TRIGGER: Schema = {
    "type": "object",
    "properties": {
        "data": {**_OBJ, "description": "at most 50,000 bytes"},
        "recipients": _OBJ,
        "ids": {"type": "array", "items": _ID, "maxItems": 10_000},
        "emails": {"type": "array", "items": {"type": "string"}, "maxItems": 10_000},
        "per_user_data": {"type": "array", "items": _OBJ, "maxItems": 10_000},
        "data_file_url": {"type": "string"},
        "email_add_duplicates": _BOOL,
        "email_ignore_missing": _BOOL,
        "id_ignore_missing": _BOOL,
    },
    "description": "at most one of recipients, ids, emails, per_user_data, data_file_url",
}
ALIAS: Schema = {
    **TRIGGER,
    "properties": {"id": {"type": "integer", "minimum": 1}, **TRIGGER["properties"]},
    "required": ["id"],
}
SENT: Schema = {
    "type": "object",
    "properties": {"delivery_id": {"type": "string"}, "queued_at": {"type": "integer"}},
    "description": "Customer.io's own answer",
}
TRIGGERED: Schema = {
    "type": "object",
    "properties": {"id": {"type": "integer"}},
    "description": "Customer.io's own answer: the trigger id",
}
JOB: Schema = {
    "type": "object",
    "required": ["job_id", "status_url", "state"],
    "properties": {
        "job_id": {"type": "string"},
        "status_url": {"type": "string"},
        "state": {"enum": ["queued", "retrying", "delivered", "refused", "ambiguous", "dead"]},
    },
    "description": "the job is stored; its outcome is (or will be) at status_url",
}
#: Customer.io's error shape; cioq's own errors carry ``meta.error`` too.
CUSTOMERIO_ERROR: Schema = {
    "type": "object",
    "properties": {"meta": {"type": "object", "properties": {"error": {"type": "string"}}}},
}

#: (route name, summary, body schema, success answer) of every App API write.
SENDS: list[tuple[str, str, Schema, Schema]] = [
    *(
        (f"app.send_{k}", f"Transactional {k}: queued, sent at most once", send_schema(k), SENT)
        for k in SEND_KINDS
    ),
    ("app.trigger", "Trigger an API broadcast: queued, sent at most once", TRIGGER, TRIGGERED),
    (
        "app.trigger_alias",
        "The seed's alias of the broadcast trigger (id in the body)",
        ALIAS,
        TRIGGERED,
    ),
]
#: (route name, summary) of every proxied read.
READ_OPERATIONS: list[tuple[str, str]] = [
    (f"app.read.{method.lower()}.{path}", f"App API {method} /v1/{path}, proxied")
    for method, path in READS
]
