"""The checks `service.lanes.track.validation` composes: one per kind of value in a v2 operation.

Each check appends `FieldError`s to the list it is given and returns nothing of
interest, so one pass over an operation collects every broken rule. Every message
starts with the field path; `service.lanes.track.translate` relies on that to rename v2 paths to
the v1 names a producer sent.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from typing import Any, TypeGuard

import orjson

from service.errors import FieldError
from service.lanes.track.limits import Limits

PERSON_KEYS = ("id", "email", "phone", "cio_id")
#: Merge and object relationships name people by these; phone is not allowed there.
PERSON_REF_KEYS = ("id", "email", "cio_id")
#: Segment and RudderStack send anonymous person events this way; SPEC does not list it.
PERSON_EVENT_KEYS = (*PERSON_KEYS, "anonymous_id")
ANONYMOUS_KEYS = ("anonymous_id",)

EVENT_TYPES = ("event", "page", "screen")
DELIVERY_METRICS = ("opened", "converted", "delivered")

#: Larger values are taken for milliseconds, the most common timestamp mistake.
MAX_SECONDS = 10_000_000_000

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZabcdefghjkmnpqrstvwxyz"
#: A ULID's first character encodes its top 3 bits; anything above 7 overflows 128 bits.
_ULID_FIRST = frozenset("01234567")
_DIGITS = frozenset("0123456789")
_HEX_CHARS = "0123456789abcdefABCDEF"
_FCM_CHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_:"
#: Long attribute names are cut in field paths so a 400 body stays readable.
_MAX_KEY_IN_PATH = 64


def key_path(prefix: str, key: str) -> str:
    """A path naming a user-chosen key, cut short when the key is very long.

    An empty key is shown as ``""`` so that the error still names a field.
    """
    if not key:
        key = '""'
    elif len(key) > _MAX_KEY_IN_PATH:
        key = key[: _MAX_KEY_IN_PATH - 3] + "..."
    return f"{prefix}.{key}" if prefix else key


def utf8_len(text: str) -> int:
    """Size of ``text`` in UTF-8 bytes; CPython answers isascii() without a scan."""
    if text.isascii():
        return len(text)
    # surrogatepass: a lone surrogate from a Python caller is measured, not raised on.
    return len(text.encode("utf-8", "surrogatepass"))


def json_type(value: object) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def required(path: str) -> FieldError:
    """The error for a missing (or null) required field."""
    return FieldError(path, "required", f"{path} is required")


def wrong_type(path: str, expected: str, value: object) -> FieldError:
    """The error for a value of the wrong JSON type."""
    return FieldError(path, "type", f"{path} must be {expected}, not {json_type(value)}")


def too_big(path: str, limit: int, actual: int, what: str = "") -> FieldError:
    """The error for a value over a byte limit."""
    subject = f"{path} ({what})" if what else path
    message = f"{subject} is {actual} bytes; Customer.io takes at most {limit} bytes (UTF-8)"
    return FieldError(path, "max_bytes", message, limit, actual)


def not_one_of(path: str, choices: Collection[str], value: object) -> FieldError:
    """The error for a value outside a fixed set."""
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return FieldError(path, "enum", f"{path} must be one of {', '.join(choices)}; got {shown}")


def invalid(path: str, value: object, expected: str, choices: Collection[str] = ()) -> FieldError:
    """The error for a bad value: required if null, enum if a string outside ``choices``."""
    if value is None:
        return required(path)
    if choices and isinstance(value, str):
        return not_one_of(path, choices, value)
    return wrong_type(path, expected, value)


def unknown_fields(
    obj: Mapping[str, Any],
    allowed: Collection[str],
    prefix: str,
    owner: str,
    *,
    hints: Mapping[str, str] | None = None,
) -> list[FieldError]:
    """An error for each key of ``obj`` outside ``allowed``; ``owner`` names the thing.

    ``hints`` explains likely mistakes by key; otherwise a near-miss spelling is offered.
    """
    out: list[FieldError] = []
    for key in obj:
        if key in allowed:
            continue
        name = str(key)
        path = key_path(prefix, name)
        hint = hints.get(name) if hints else None
        if hint is None:
            close = difflib.get_close_matches(name, sorted(allowed), n=1)
            hint = f"did you mean '{close[0]}'?" if close else None
        message = f"{path} is not a field of {owner} and would be dropped"
        out.append(FieldError(path, "unknown_field", f"{message}; {hint}" if hint else message))
    return out


def check_string(
    value: object, path: str, errors: list[FieldError], *, max_bytes: int | None = None
) -> TypeGuard[str]:
    """A required non-empty string, optionally bounded; True when it is fine."""
    if not isinstance(value, str):
        errors.append(invalid(path, value, "a string"))
        return False
    if not value:
        errors.append(FieldError(path, "required", f"{path} must not be empty"))
        return False
    if max_bytes is not None:
        size = utf8_len(value)
        if size > max_bytes:
            errors.append(too_big(path, max_bytes, size))
            return False
    return True


def check_seconds(value: object, path: str, errors: list[FieldError], *, strict: bool) -> None:
    """An integer Unix time in seconds; strict also refuses milliseconds and pre-1970."""
    if type(value) is int and (not strict or 0 <= value <= MAX_SECONDS):
        return
    # JSON Schema's integer includes 1.0; only strict asks for the integer spelling.
    if not strict and isinstance(value, float) and value.is_integer():
        return
    if type(value) is int and value > MAX_SECONDS:
        message = f"{path} looks like milliseconds; send whole Unix seconds"
        errors.append(FieldError(path, "seconds", message, MAX_SECONDS, value))
    elif type(value) is int:
        errors.append(FieldError(path, "seconds", f"{path} must not be before 1970"))
    else:
        got = "a decimal number" if isinstance(value, float) else json_type(value)
        errors.append(FieldError(path, "seconds", f"{path} must be whole Unix seconds, not {got}"))


def is_ulid(value: object) -> bool:
    """A 26-character Crockford base32 ULID (either case)."""
    return (
        isinstance(value, str)
        and len(value) == 26
        and value[0] in _ULID_FIRST
        and value.isascii()
        and not value.strip(_CROCKFORD)
    )


def check_ulid(value: object, path: str, errors: list[FieldError]) -> None:
    """An event id Customer.io can deduplicate on."""
    if not is_ulid(value):
        message = f"{path} must be a ULID (26 characters of Crockford base32)"
        errors.append(FieldError(path, "format", message))


def check_event_id(value: object, path: str, limits: Limits, errors: list[FieldError]) -> None:
    """A string; a ULID when strict (Customer.io asks for one but states no refusal)."""
    if limits.strict:
        check_ulid(value, path, errors)
    elif not isinstance(value, str):
        errors.append(wrong_type(path, "a string", value))


def is_e164(value: str) -> bool:
    """``+`` then 1 to 15 ASCII digits, the first not 0."""
    return (
        2 <= len(value) <= 16 and value[0] == "+" and value[1] != "0" and set(value[1:]) <= _DIGITS
    )


def is_push_token(value: object) -> bool:
    """An APNs token (64+ hex digits) or an FCM one (``<instance>:<token>``, URL-safe)."""
    if not isinstance(value, str) or len(value) < 32 or not value.isascii():
        return False
    if ":" in value:
        return not value.strip(_FCM_CHARS)
    return len(value) >= 64 and not value.strip(_HEX_CHARS)


def check_person_identifiers(
    value: object, path: str, keys: tuple[str, ...], limits: Limits, errors: list[FieldError]
) -> None:
    """Exactly one of ``keys``, holding a non-empty string of at most max_id_bytes."""
    if not isinstance(value, dict):
        errors.append(invalid(path, value, "an object"))
        return
    if len(value) != 1 or next(iter(value)) not in keys:
        message = f"{path} must hold exactly one of {', '.join(keys)}"
        errors.append(FieldError(path, "one_identifier", message))
        return
    ((name, ident),) = value.items()
    ident_path = f"{path}.{name}"
    if name == "phone":
        if check_string(ident, ident_path, errors) and not is_e164(ident):
            message = f"{ident_path} must be E.164: '+' then up to 15 digits, like +14155552671"
            errors.append(FieldError(ident_path, "format", message))
        return
    check_string(ident, ident_path, errors, max_bytes=limits.max_id_bytes)


def check_object_identifiers(
    value: object, path: str, limits: Limits, errors: list[FieldError]
) -> None:
    """``{object_type_id, object_id}`` or ``{cio_object_id}``."""
    if not isinstance(value, dict):
        errors.append(invalid(path, value, "an object"))
        return
    if len(value) == 1 and "cio_object_id" in value:
        check_string(
            value["cio_object_id"], f"{path}.cio_object_id", errors, max_bytes=limits.max_id_bytes
        )
        return
    if len(value) != 2 or "object_type_id" not in value or "object_id" not in value:
        message = f"{path} must be {{object_type_id, object_id}} or {{cio_object_id}}"
        errors.append(FieldError(path, "one_identifier", message))
        return
    type_path = f"{path}.object_type_id"
    type_id = value["object_type_id"]
    if check_string(type_id, type_path, errors) and (
        type_id[0] == "0" or not _DIGITS.issuperset(type_id)
    ):
        message = f'{type_path} must be a whole number from 1 written as a string, like "1"'
        errors.append(FieldError(type_path, "format", message))
    check_string(value["object_id"], f"{path}.object_id", errors, max_bytes=limits.max_id_bytes)


def _value_bytes(value: object) -> int:
    """A non-string attribute value's size as JSON; raises TypeError if it has none."""
    if value is None or value is True:
        return 4
    if value is False:
        return 5
    if type(value) is int:
        return len(str(value))
    return len(orjson.dumps(value))


def check_attributes(
    value: object,
    path: str,
    limits: Limits,
    errors: list[FieldError],
    *,
    total_limit: int | None = None,
) -> None:
    """An object of at most max_attributes names and values, each within its byte limit.

    With ``total_limit`` (objects and relationships), names plus values together must
    also fit; that needs every value's size, so scalars are measured only then.
    """
    if not isinstance(value, dict):
        errors.append(wrong_type(path, "an object", value))
        return
    count = len(value)
    if count > limits.max_attributes:
        message = (
            f"{path} has {count} attributes; Customer.io takes at most {limits.max_attributes}"
        )
        errors.append(FieldError(path, "max_items", message, limits.max_attributes, count))
        return
    max_name = limits.max_attr_name_bytes
    max_value = limits.max_attr_value_bytes
    total = 0
    # utf8_len is inlined for ASCII: this loop runs up to 300 times per identify.
    for name, item in value.items():
        if type(name) is not str:
            errors.append(wrong_type(path, "an object with string keys", name))
            continue
        name_bytes = len(name) if name.isascii() else utf8_len(name)
        if name_bytes > max_name:
            errors.append(too_big(key_path(path, name), max_name, name_bytes, "attribute name"))
        if type(item) is str:
            size = len(item) if item.isascii() else utf8_len(item)
        elif total_limit is None and (item is None or isinstance(item, int | float)):
            continue  # a scalar is far below the value limit and no total is kept
        else:
            try:
                size = _value_bytes(item)
            except TypeError:
                errors.append(wrong_type(key_path(path, name), "JSON", item))
                continue
        if size > max_value:
            errors.append(too_big(key_path(path, name), max_value, size, "attribute value"))
        total += name_bytes + size
    if total_limit is not None and total > total_limit:
        errors.append(too_big(path, total_limit, total, "all names and values together"))


def check_event_name(value: object, path: str, limits: Limits, errors: list[FieldError]) -> None:
    """A non-blank name of at most max_event_name_bytes (Customer.io trims spaces)."""
    if not isinstance(value, str):
        errors.append(invalid(path, value, "a string"))
        return
    if not value.strip():
        errors.append(FieldError(path, "required", f"{path} must not be blank"))
        return
    size = utf8_len(value)
    if size > limits.max_event_name_bytes:
        errors.append(too_big(path, limits.max_event_name_bytes, size))


def check_event_fields(
    body: Mapping[str, Any],
    prefix: str,
    limits: Limits,
    errors: list[FieldError],
    *,
    data_key: str = "attributes",
) -> None:
    """``name``, ``id``, ``timestamp`` and event data of an event (v1 calls the data ``data``)."""
    check_event_name(body.get("name"), prefix + "name", limits, errors)
    if "id" in body:
        check_event_id(body["id"], prefix + "id", limits, errors)
    if "timestamp" in body:
        check_seconds(body["timestamp"], prefix + "timestamp", errors, strict=limits.strict)
    if data_key in body:
        check_event_data(body[data_key], prefix + data_key, limits, errors)


def check_event_data(value: object, path: str, limits: Limits, errors: list[FieldError]) -> None:
    """Event data: an object ("a hash") of at most max_event_data_bytes as JSON."""
    if not isinstance(value, dict):
        errors.append(wrong_type(path, "an object (event data must be a hash)", value))
        return
    if not value:
        return
    try:
        size = len(orjson.dumps(value))
    except TypeError:
        errors.append(wrong_type(path, "JSON", value))
        return
    if size > limits.max_event_data_bytes:
        errors.append(too_big(path, limits.max_event_data_bytes, size, "event data as JSON"))
