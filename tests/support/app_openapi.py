"""A small oracle for the App API's send and trigger operations, from Customer.io's reference.

Customer.io's full App API document is not in ../shared; this is its ``sendEmail``,
``sendPush``, ``sendSMS`` and ``triggerBroadcast`` request bodies as the reference
(../shared/reference/cdp-and-app-api.md §2.3 and §3) and the seed Postman collection
describe them: the fields, their types, what each operation requires. Extra keys are
allowed, as in Customer.io's own documents, except inside ``identifiers``.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

#: "Exactly one of {id}, {email}, {cio_id}".
_IDENTIFIERS: Schema = {
    "type": "object",
    "properties": {name: {"type": "string"} for name in ("id", "email", "cio_id")},
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
}
_MESSAGE_ID: Schema = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
_COMMON: dict[str, Schema] = {
    "transactional_message_id": _MESSAGE_ID,
    "identifiers": _IDENTIFIERS,
    "message_data": {"type": "object"},
    "disable_message_retention": {"type": "boolean"},
    "send_to_unsubscribed": {"type": "boolean"},
    "queue_draft": {"type": "boolean"},
    "auto_create": {"type": "boolean"},
    "language": {"type": "string"},
}
_EMAIL: Schema = {
    "type": "object",
    "required": ["to"],
    "properties": {
        **_COMMON,
        # A comma-separated list of addresses (display names allowed): 1 to 15 of them.
        "to": {"type": "string", "format": "email"},
        "from": {"type": "string"},
        "reply_to": {"type": "string"},
        "subject": {"type": "string"},
        "body": {"type": "string"},
        "body_plain": {"type": "string"},
        "preheader": {"type": "string"},
        "fake_bcc": {"type": "boolean"},
        "tracked": {"type": "boolean"},
        "disable_css_preprocessing": {"type": "boolean"},
    },
}
_PUSH: Schema = {
    "type": "object",
    "required": ["transactional_message_id", "identifiers"],
    "properties": {
        **_COMMON,
        "to": {"type": "string", "minLength": 1},
        "title": {"type": "string"},
        "message": {"type": "string"},
        "image_url": {"type": "string"},
        "link": {"type": "string"},
        "sound": {"type": "string", "enum": ["default", "none"]},
        "custom_data": {"type": "object"},
        "custom_payload": {"type": "object"},
    },
}
_SMS: Schema = {
    "type": "object",
    "required": ["transactional_message_id", "identifiers", "to"],
    "properties": {
        **_COMMON,
        "to": {"type": "string", "pattern": "^\\+[1-9][0-9]{1,14}$"},
        "from": {"type": "string"},
        "tracked": {"type": "boolean"},
    },
}
_FLAGS: dict[str, Schema] = {
    "data": {"type": "object"},
    "email_add_duplicates": {"type": "boolean"},
    "email_ignore_missing": {"type": "boolean"},
    "id_ignore_missing": {"type": "boolean"},
}


def _shape(field: str | None, schema: Schema | None) -> Schema:
    others = ("recipients", "ids", "emails", "per_user_data", "data_file_url")
    shape: Schema = {"type": "object", "properties": dict(_FLAGS)}
    if field is not None and schema is not None:
        shape["required"] = [field]
        shape["properties"][field] = schema
    shape["not"] = {"anyOf": [{"required": [o]} for o in others if o != field]}
    return shape


_TRIGGER: Schema = {
    "oneOf": [
        _shape(None, None),
        _shape("recipients", {"type": "object"}),
        _shape("emails", {"type": "array", "items": {"type": "string", "format": "email"}}),
        _shape(
            "ids",
            {
                "type": "array",
                "maxItems": 10_000,
                # Integers past 64 bits are floats to most JSON parsers, cioq's included.
                "items": {
                    "anyOf": [
                        {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
                        {"type": "string", "minLength": 1},
                    ]
                },
            },
        ),
        _shape(
            "per_user_data",
            {
                "type": "array",
                "maxItems": 10_000,
                "items": {
                    "oneOf": [
                        {
                            "type": "object",
                            "required": [key],
                            "properties": {key: {"type": "string"}, "data": {"type": "object"}},
                            "not": {"required": [other]},
                        }
                        for key, other in (("id", "email"), ("email", "id"))
                    ]
                },
            },
        ),
        _shape("data_file_url", {"type": "string", "format": "uri"}),
    ]
}


def _post(operation_id: str, schema: Schema, parameters: list[Schema] | None = None) -> Schema:
    op: Schema = {
        "operationId": operation_id,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        },
        "responses": {"200": {"description": "queued"}},
    }
    if parameters:
        op["parameters"] = parameters
    return {"post": op}


DOCUMENT: Schema = {
    "openapi": "3.1.0",
    "info": {"title": "Customer.io App API: sends and triggers", "version": "1"},
    "paths": {
        "/v1/send/email": _post("sendEmail", _EMAIL),
        "/v1/send/push": _post("sendPush", _PUSH),
        "/v1/send/sms": _post("sendSMS", _SMS),
        "/v1/campaigns/{broadcast_id}/triggers": _post(
            "triggerBroadcast",
            _TRIGGER,
            [
                {
                    "name": "broadcast_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1},
                }
            ],
        ),
    },
}
