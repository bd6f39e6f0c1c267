"""Validation of App API sends and broadcast triggers by Customer.io's documented rules.

Pure: a body in, a list of `FieldError`s out (empty when valid). Sources: reference
`cdp-and-app-api.md` §2.2 to 2.3 (send bodies and limits), §3 (trigger bodies and limits).
A send Customer.io would refuse with 400 is refused here instead, before it is queued:
past this point a send is never sent twice, so it should fail where the producer sees it.

Every default rule has its evidence in docs/validation-rules.md. With ``strict`` (the
workspace's ``strict_validation``) cioq's extra checks apply too: ``identifiers`` on an
email send and only id/email/cio_id keys in it, an ``@`` in an email identifier, in
``to``/``cc``/``bcc`` and in trigger ``emails``, template-less emails with body, subject
and from, no ``to`` on kinds that take none, non-empty trigger ``ids``, an http(s)
``data_file_url``. Without it, such a body is forwarded as sent: Customer.io ignores
what it does not read.

Choices where the documentation leaves room:

* sizes are read as 1000-byte units (1 MB payload, 2 MB attachments), the strictest;
* the payload limit is measured on the body as sent, without ``attachments``;
* attachments are measured decoded (their size as files); they must be valid base64;
* ``to`` may be Liquid (``{{customer.phone}}``), which only Customer.io can resolve.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from typing import Any

import orjson

from service.errors import FieldError

#: Send kinds: the path's last segment, as in the official Python SDK 3.2.
SEND_KINDS = ("email", "push", "sms", "in_app", "inbox_message", "whatsapp")
#: Kinds that name their recipient in ``to``, and whether it is required.
_TO_REQUIRED = {"email": True, "sms": True, "whatsapp": True, "push": False}
IDENTIFIER_NAMES = ("id", "email", "cio_id")
MAX_PAYLOAD_BYTES = 1_000_000
MAX_ATTACHMENT_BYTES = 2_000_000
MAX_RECIPIENTS = 15
MAX_SEND_AHEAD_S = 90 * 86_400
MAX_TRIGGER_DATA_BYTES = 50_000
MAX_TRIGGER_ITEMS = 10_000
_BOOLEANS = (
    "disable_message_retention",
    "send_to_unsubscribed",
    "queue_draft",
    "tracked",
    "fake_bcc",
    "disable_css_preprocessing",
    "auto_create",
)
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_LIQUID = re.compile(r"\{\{.*\}\}")
_ADDRESS = re.compile(r"[^@\s<>,]+@[^@\s<>,]+")
RECIPIENT_FIELDS = ("recipients", "ids", "emails", "per_user_data", "data_file_url")
_TRIGGER_FLAGS = ("email_add_duplicates", "email_ignore_missing", "id_ignore_missing")


def _is_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return (isinstance(value, str) and value.strip() != "") or isinstance(value, int)


def _identifiers(kind: str, body: dict[str, Any], strict: bool) -> list[FieldError]:
    ident = body.get("identifiers")
    if ident is None:
        # sendEmail requires only `to`; the other kinds require identifiers.
        if kind == "email" and not strict:
            return []
        return [FieldError("identifiers", "required", "identifiers is required")]
    if not isinstance(ident, dict):
        return [FieldError("identifiers", "type", "identifiers must be an object")]
    present = [name for name in IDENTIFIER_NAMES if name in ident]
    unknown = sorted(set(ident) - set(IDENTIFIER_NAMES))
    if unknown and strict:
        return [
            FieldError(
                f"identifiers.{unknown[0]}",
                "one_of",
                "identifiers may hold only id, email or cio_id",
            )
        ]
    if len(present) != 1:
        return [
            FieldError(
                "identifiers",
                "exactly_one",
                "identifiers must hold exactly one of id, email, cio_id",
                1,
                len(present),
            )
        ]
    name = present[0]
    value = ident[name]
    # Customer.io: an id "cannot be an empty string"; blank and '@'-less are cioq's checks.
    given = _is_id(value) if strict else value != "" and isinstance(value, str | int)
    if (
        not given
        or isinstance(value, bool)
        or (strict and name == "email" and "@" not in str(value))
    ):
        rule = "email" if name == "email" else "type"
        text = "an email address" if name == "email" else "a non-empty string or integer"
        return [FieldError(f"identifiers.{name}", rule, f"identifiers.{name} must be {text}")]
    return []


def _message_id(kind: str, body: dict[str, Any], strict: bool) -> list[FieldError]:
    value = body.get("transactional_message_id")
    if value is None:
        if kind == "email" and not strict:
            return []  # metrics roll up under id 1; Customer.io states no content rule
        if kind != "email":
            return [
                FieldError(
                    "transactional_message_id",
                    "required",
                    f"transactional_message_id is required for {kind}",
                )
            ]
        # Without a template the email's own content must be complete.
        return [
            FieldError(name, "required", f"{name} is required when no template is named")
            for name in ("body", "subject", "from")
            if not isinstance(body.get(name), str) or not body.get(name)
        ]
    if not _is_id(value):
        return [
            FieldError(
                "transactional_message_id",
                "type",
                "transactional_message_id must be an integer or a trigger name",
            )
        ]
    return []


def _send_at(body: dict[str, Any], now_s: float) -> list[FieldError]:
    value = body.get("send_at")
    if value is None:
        return []
    if isinstance(value, bool) or not isinstance(value, int):
        return [FieldError("send_at", "type", "send_at must be a Unix time in seconds")]
    if value > now_s + MAX_SEND_AHEAD_S:
        return [
            FieldError(
                "send_at",
                "max_ahead",
                "send_at may be at most 90 days ahead",
                int(now_s + MAX_SEND_AHEAD_S),
                value,
            )
        ]
    return []


def _addresses(value: Any) -> list[str]:
    return [part.strip() for part in str(value).split(",") if part.strip()]


def _email(body: dict[str, Any], strict: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    total = 0
    for name in ("to", "cc", "bcc"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            if name != "to":  # `to` has its own rule in _to
                errors.append(FieldError(name, "type", f"{name} must be a comma-separated string"))
            continue
        for address in _addresses(value):
            total += 1
            if strict and not _ADDRESS.search(address) and not _LIQUID.search(address):
                errors.append(
                    FieldError(name, "email", f"{name} holds {address!r}, not an email address")
                )
    if total > MAX_RECIPIENTS:
        errors.append(
            FieldError(
                "to",
                "max_recipients",
                "to, cc and bcc may name at most 15 recipients together",
                MAX_RECIPIENTS,
                total,
            )
        )
    return errors + _attachments(body.get("attachments"))


def _attachments(value: Any) -> list[FieldError]:
    if value is None:
        return []
    if not isinstance(value, dict):
        return [FieldError("attachments", "type", "attachments must map file names to base64")]
    size = 0
    for name, content in value.items():
        try:
            size += len(base64.b64decode(content, validate=True))
        except (binascii.Error, TypeError, ValueError):
            return [
                FieldError(f"attachments.{name}", "base64", f"attachment {name!r} is not base64")
            ]
    if size > MAX_ATTACHMENT_BYTES:
        return [
            FieldError(
                "attachments",
                "max_bytes",
                "attachments may total at most 2 MB",
                MAX_ATTACHMENT_BYTES,
                size,
            )
        ]
    return []


def _to(kind: str, body: dict[str, Any], strict: bool) -> list[FieldError]:
    value = body.get("to")
    if value is None:
        if _TO_REQUIRED.get(kind):
            return [FieldError("to", "required", f"to is required for {kind}")]
        return []
    if kind not in _TO_REQUIRED:
        if strict:
            return [FieldError("to", "not_allowed", f"{kind} messages take no to")]
        return []
    # "" is refused (the reference's minLength 1); a blank one only in strict mode, as a
    # blank identifier: Customer.io's reference allows it (docs/validation-rules.md).
    if not isinstance(value, str) or not value or (strict and not value.strip()):
        return [FieldError("to", "type", "to must be a non-empty string")]
    if kind in ("sms", "whatsapp") and not (_E164.match(value) or _LIQUID.search(value)):
        return [FieldError("to", "e164", "to must be an E.164 number such as +15555550100")]
    return []


def validate_send(
    kind: str, body: Any, *, now_s: float | None = None, strict: bool = False
) -> list[FieldError]:
    """Every broken rule of a ``POST /v1/send/<kind>`` body."""
    if not isinstance(body, dict):
        return [FieldError("body", "type", "the body must be a JSON object")]
    now = time.time() if now_s is None else now_s
    errors = (
        _identifiers(kind, body, strict) + _message_id(kind, body, strict) + _to(kind, body, strict)
    )
    if kind == "email":
        errors += _email(body, strict)
    errors += _send_at(body, now)
    for name in ("message_data", "custom_data", "custom_payload", "custom_device"):
        if name in body and not isinstance(body[name], dict):
            errors.append(FieldError(name, "type", f"{name} must be an object"))
    for name in _BOOLEANS:
        if name in body and not isinstance(body[name], bool):
            errors.append(FieldError(name, "type", f"{name} must be true or false"))
    without = {k: v for k, v in body.items() if k != "attachments"}
    size = len(orjson.dumps(without))
    if size > MAX_PAYLOAD_BYTES:
        errors.append(
            FieldError(
                "body",
                "max_bytes",
                "a send may be at most 1 MB without its attachments",
                MAX_PAYLOAD_BYTES,
                size,
            )
        )
    return errors


def broadcast_id_of(value: Any, field: str) -> tuple[int | None, list[FieldError]]:
    """A broadcast id from a path segment or the seed alias's ``id``."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None, [FieldError(field, "type", f"{field} must be a positive integer")]
    return value, []


def validate_trigger(body: Any, *, strict: bool = False) -> list[FieldError]:
    """Every broken rule of a ``POST /v1/campaigns/{id}/triggers`` body."""
    if body is None:
        return []
    if not isinstance(body, dict):
        return [FieldError("body", "type", "the body must be a JSON object")]
    errors: list[FieldError] = []
    data = body.get("data")
    if data is not None:
        if not isinstance(data, dict):
            errors.append(FieldError("data", "type", "data must be an object"))
        elif (size := len(orjson.dumps(data))) > MAX_TRIGGER_DATA_BYTES:
            errors.append(
                FieldError(
                    "data",
                    "max_bytes",
                    "data may be at most 50,000 bytes",
                    MAX_TRIGGER_DATA_BYTES,
                    size,
                )
            )
    present = [name for name in RECIPIENT_FIELDS if name in body]
    if len(present) > 1:
        errors.append(
            FieldError(
                present[1],
                "one_of",
                "name recipients with at most one of " + ", ".join(RECIPIENT_FIELDS),
            )
        )
    for name in ("ids", "emails", "per_user_data"):
        errors += _recipient_list(name, body.get(name), strict)
    url = body.get("data_file_url")
    if url is not None and not isinstance(url, str):
        errors.append(FieldError("data_file_url", "type", "data_file_url must be a string"))
    elif strict and url is not None and not url.startswith(("http://", "https://")):
        errors.append(FieldError("data_file_url", "url", "data_file_url must be an http(s) URL"))
    recipients = body.get("recipients")
    if recipients is not None and not isinstance(recipients, dict):
        errors.append(FieldError("recipients", "type", "recipients must be a filter object"))
    for name in _TRIGGER_FLAGS:
        if name in body and not isinstance(body[name], bool):
            errors.append(FieldError(name, "type", f"{name} must be true or false"))
    return errors


def _recipient_list(name: str, value: Any, strict: bool) -> list[FieldError]:
    if value is None:
        return []
    if not isinstance(value, list):
        return [FieldError(name, "type", f"{name} must be a list")]
    if len(value) > MAX_TRIGGER_ITEMS:
        return [
            FieldError(
                name,
                "max_items",
                f"{name} may hold at most 10,000 entries",
                MAX_TRIGGER_ITEMS,
                len(value),
            )
        ]
    for i, item in enumerate(value):
        where = f"{name}[{i}]"
        # JSON Schema's integer includes 169.0; only strict asks for the integer spelling.
        loose = isinstance(item, str) or (isinstance(item, float) and item.is_integer())
        if name == "ids" and not (_is_id(item) or (not strict and loose)):
            return [FieldError(where, "type", "ids must be non-empty strings or integers")]
        if name == "emails" and not (isinstance(item, str) and ("@" in item or not strict)):
            return [FieldError(where, "email", "emails must be email addresses")]
        if name == "per_user_data":
            if not isinstance(item, dict) or sum(k in item for k in ("id", "email")) != 1:
                text = "each entry needs exactly one of id, email"
                return [FieldError(where, "exactly_one", text)]
            if "data" in item and not isinstance(item["data"], dict):
                return [FieldError(f"{where}.data", "type", "data must be an object")]
    return []
