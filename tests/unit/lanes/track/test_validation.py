"""v2 operation validation: every action accepted, every rule named, every limit exact."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import FieldError
from service.lanes.track.limits import DEFAULT_LIMITS, Limits
from service.lanes.track.validation import ACTIONS_BY_TYPE, op_size_error, validate_op
from service.lanes.track.validation_rules import is_ulid

ULID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
OBJ = {"object_type_id": "1", "object_id": "acme"}
#: Multi-byte characters: limits count UTF-8 bytes, not characters.
E2, E3, E4 = "é", "€", "😀"


def person(action: str, **fields: Any) -> dict[str, Any]:
    """A person op for id 42 with `fields` on top."""
    return {"type": "person", "action": action, "identifiers": {"id": "42"}, **fields}


def obj(action: str, **fields: Any) -> dict[str, Any]:
    """An object op for object acme of type 1 with `fields` on top."""
    return {"type": "object", "action": action, "identifiers": OBJ, **fields}


def delivery(**fields: Any) -> dict[str, Any]:
    """A valid push-opened delivery event, with `fields` replacing its own."""
    op = {
        "type": "delivery",
        "action": "event",
        "identifiers": {"id": "RPILAgUBcRhIBqSfeiIwdIYJKxTY"},
        "name": "opened",
        "attributes": {"device_token": "tok"},
    }
    return {**op, **fields}


def pairs(errors: list[FieldError]) -> list[tuple[str, str]]:
    """The (field, rule) of each error, sorted, for order-free comparison."""
    return sorted((e.field, e.rule) for e in errors)


REL = [{"identifiers": OBJ, "relationship_attributes": {"role": "admin"}}]
PEOPLE_REL = [{"identifiers": {"email": "a@b.co"}, "relationship_attributes": {"role": "x"}}]

VALID: list[tuple[str, dict[str, Any]]] = [
    # SPEC: `device_token` is `type: string` with no minLength (the CI conformance seed of
    # 6116d54 found cioq refusing it).
    ("delivery-empty-token", delivery(attributes={"device_token": ""})),
    ("person-identify", person("identify", attributes={"plan": "pro", "_update": True})),
    ("person-identify-bare", person("identify")),
    ("person-identify-timestamp", person("identify", timestamp=1_700_000_000)),
    ("person-identify-relationships", person("identify", cio_relationships=REL)),
    ("person-identify-empty-relationships", person("identify", cio_relationships=[])),
    ("person-identify-email", {**person("identify"), "identifiers": {"email": "a@b.co"}}),
    ("person-identify-phone", {**person("identify"), "identifiers": {"phone": "+14155552671"}}),
    ("person-identify-cio-id", {**person("identify"), "identifiers": {"cio_id": "a3000001"}}),
    ("person-identify-null-value", person("identify", attributes={"plan": None})),
    ("person-identify-nested-value", person("identify", attributes={"a": {"b": [1, 2]}})),
    ("person-delete", person("delete")),
    ("person-event", person("event", name="buy", id=ULID, timestamp=0, attributes={"p": 1})),
    ("person-event-lowercase-ulid", person("event", name="buy", id=ULID.lower())),
    ("person-event-max-seconds", person("event", name="buy", timestamp=10_000_000_000)),
    (
        "person-event-anonymous",
        {**person("event", name="buy"), "identifiers": {"anonymous_id": "anon-1"}},
    ),
    ("person-screen", person("screen", name="home")),
    ("person-page", person("page", name="/pricing", attributes={"keywords": ["a"]})),
    ("person-add-relationships", person("add_relationships", cio_relationships=REL)),
    (
        "person-delete-relationships-cio-object-id",
        person(
            "delete_relationships", cio_relationships=[{"identifiers": {"cio_object_id": "o1"}}]
        ),
    ),
    (
        "person-add-device",
        person(
            "add_device",
            device={
                "token": "tok",
                "platform": "android",
                "last_used": 1_700_000_000,
                "attributes": {"push_enabled": "false", "app_version": "2.1"},
            },
        ),
    ),
    ("person-delete-device", person("delete_device", device={"token": "tok"})),
    (
        "person-merge",
        {
            "type": "person",
            "action": "merge",
            "primary": {"id": "1"},
            "secondary": {"email": "x@y"},
        },
    ),
    ("person-suppress", person("suppress")),
    ("person-unsuppress", person("unsuppress")),
    ("object-identify", obj("identify", attributes={"name": "Acme"}, cio_relationships=PEOPLE_REL)),
    ("object-identify-cio-object-id", {**obj("identify"), "identifiers": {"cio_object_id": "o1"}}),
    (
        "object-identify-anonymous-relationships",
        obj(
            "identify_anonymous",
            cio_relationships=[{"identifiers": {"anonymous_id": "anon-1"}}],
        ),
    ),
    ("object-identify-anonymous-top-level", obj("identify_anonymous", anonymous_id="anon-1")),
    ("object-delete", obj("delete")),
    ("object-add-relationships", obj("add_relationships", cio_relationships=PEOPLE_REL)),
    (
        "object-delete-relationships",
        obj("delete_relationships", cio_relationships=[{"identifiers": {"cio_id": "c1"}}]),
    ),
    ("delivery-event", delivery()),
    ("delivery-event-id-timestamp", delivery(id=ULID, timestamp=1_700_000_000)),
]


@pytest.mark.parametrize("op", [op for _, op in VALID], ids=[name for name, _ in VALID])
def test_valid_ops_have_no_errors(op: dict[str, Any]) -> None:
    """Each documented type/action in its valid shape passes."""
    assert validate_op(op) == []


def test_every_action_has_a_valid_example() -> None:
    """The valid table covers every type/action pair the validator knows."""
    covered = {(op["type"], op["action"]) for _, op in VALID}
    known = {(kind, action) for kind, actions in ACTIONS_BY_TYPE.items() for action in actions}
    assert covered == known
    assert len(known) == 18


def _device(**fields: Any) -> dict[str, Any]:
    """A valid add_device device with `fields` replacing its own."""
    return {"token": "tok", "platform": "ios", **fields}


INVALID: list[tuple[str, object, list[tuple[str, str]]]] = [
    ("not-an-object", ["x"], [("op", "type")]),
    ("type-missing", {"action": "identify"}, [("type", "required")]),
    ("type-not-string", {"type": 1, "action": "identify"}, [("type", "type")]),
    ("type-unknown", {"type": "company", "action": "identify"}, [("type", "enum")]),
    ("action-missing", {"type": "person"}, [("action", "required")]),
    ("action-not-string", {"type": "person", "action": ["x"]}, [("action", "type")]),
    ("action-unknown", {"type": "person", "action": "fly"}, [("action", "enum")]),
    ("object-has-no-event", obj("event", name="x"), [("action", "enum")]),
    ("delivery-has-no-identify", delivery(action="identify"), [("action", "enum")]),
    (
        "typo-identifier",
        {"type": "person", "action": "delete", "identifier": {"id": "1"}},
        [("identifier", "unknown_field"), ("identifiers", "required")],
    ),
    ("identifiers-null", person("delete", identifiers=None), [("identifiers", "required")]),
    ("identifiers-string", person("delete", identifiers="42"), [("identifiers", "type")]),
    ("identifiers-empty", person("delete", identifiers={}), [("identifiers", "one_identifier")]),
    (
        "identifiers-two",
        person("delete", identifiers={"id": "1", "email": "a@b"}),
        [("identifiers", "one_identifier")],
    ),
    (
        "identifiers-unknown-key",
        person("delete", identifiers={"user_id": "1"}),
        [("identifiers", "one_identifier")],
    ),
    (
        "anonymous-id-not-for-identify",
        person("identify", identifiers={"anonymous_id": "a"}),
        [("identifiers", "one_identifier")],
    ),
    ("id-integer", person("delete", identifiers={"id": 42}), [("identifiers.id", "type")]),
    ("id-empty", person("delete", identifiers={"id": ""}), [("identifiers.id", "required")]),
    ("id-null", person("delete", identifiers={"id": None}), [("identifiers.id", "required")]),
    (
        "phone-no-plus",
        person("delete", identifiers={"phone": "14155552671"}),
        [("identifiers.phone", "format")],
    ),
    (
        "phone-16-digits",
        person("delete", identifiers={"phone": "+1234567890123456"}),
        [("identifiers.phone", "format")],
    ),
    (
        "phone-leading-zero",
        person("delete", identifiers={"phone": "+0123"}),
        [("identifiers.phone", "format")],
    ),
    (
        "phone-non-ascii-digits",
        person("delete", identifiers={"phone": "+١٢٣"}),
        [("identifiers.phone", "format")],
    ),
    ("unknown-top-level", person("delete", name="x"), [("name", "unknown_field")]),
    ("unknown-empty-key", person("delete", **{"": 1}), [('""', "unknown_field")]),
    (
        "event-data-is-v1-name",
        person("event", name="x", data={"a": 1}),
        [("data", "unknown_field")],
    ),
    ("attributes-list", person("identify", attributes=[1]), [("attributes", "type")]),
    (
        "attribute-not-json",
        person("identify", attributes={"s": {1, 2}}),
        [("attributes.s", "type")],
    ),
    (
        "update-not-boolean",
        person("identify", attributes={"_update": "yes"}),
        [("attributes._update", "type")],
    ),
    ("timestamp-float", person("identify", timestamp=1.7e9), [("timestamp", "seconds")]),
    ("timestamp-string", person("identify", timestamp="1700000000"), [("timestamp", "seconds")]),
    ("timestamp-ms", person("identify", timestamp=1_700_000_000_000), [("timestamp", "seconds")]),
    ("timestamp-negative", person("identify", timestamp=-1), [("timestamp", "seconds")]),
    ("timestamp-boolean", person("identify", timestamp=True), [("timestamp", "seconds")]),
    ("event-name-missing", person("event"), [("name", "required")]),
    ("event-name-blank", person("page", name="  "), [("name", "required")]),
    ("event-name-number", person("screen", name=5), [("name", "type")]),
    ("event-id-uuid", person("event", name="x", id="3f2b..."), [("id", "format")]),
    ("event-id-overflow", person("event", name="x", id="8" + ULID[1:]), [("id", "format")]),
    ("event-id-letter-u", person("event", name="x", id=ULID[:-1] + "U"), [("id", "format")]),
    ("event-data-string", person("event", name="x", attributes=""), [("attributes", "type")]),
    ("event-timestamp-ms", person("event", name="x", timestamp=2**40), [("timestamp", "seconds")]),
    ("device-missing", person("add_device"), [("device", "required")]),
    ("device-string", person("add_device", device="tok"), [("device", "type")]),
    (
        "device-token-missing",
        person("add_device", device={"platform": "ios"}),
        [("device.token", "required")],
    ),
    (
        "device-platform-missing",
        person("add_device", device={"token": "t"}),
        [("device.platform", "required")],
    ),
    (
        "device-platform-web",
        person("add_device", device=_device(platform="web")),
        [("device.platform", "enum")],
    ),
    (
        "device-last-used-ms",
        person("add_device", device=_device(last_used=1_700_000_000_000)),
        [("device.last_used", "seconds")],
    ),
    (
        "device-attribute-boolean",
        person("add_device", device=_device(attributes={"push_enabled": True})),
        [("device.attributes.push_enabled", "type")],
    ),
    (
        "device-push-enabled-yes",
        person("add_device", device=_device(attributes={"push_enabled": "yes"})),
        [("device.attributes.push_enabled", "enum")],
    ),
    (
        "device-v1-id",
        person("add_device", device=_device(id="tok")),
        [("device.id", "unknown_field")],
    ),
    (
        "delete-device-platform",
        person("delete_device", device={"token": "t", "platform": "ios"}),
        [("device.platform", "unknown_field")],
    ),
    (
        "merge-identifiers",
        {
            "type": "person",
            "action": "merge",
            "identifiers": {"id": "1"},
            "primary": {"id": "1"},
            "secondary": {"id": "2"},
        },
        [("identifiers", "unknown_field")],
    ),
    (
        "merge-secondary-missing",
        {"type": "person", "action": "merge", "primary": {"id": "1"}},
        [("secondary", "required")],
    ),
    (
        "merge-phone",
        {"type": "person", "action": "merge", "primary": {"phone": "+1"}, "secondary": {"id": "2"}},
        [("primary", "one_identifier")],
    ),
    ("relationships-missing", person("add_relationships"), [("cio_relationships", "required")]),
    (
        "relationships-object",
        person("add_relationships", cio_relationships={"a": 1}),
        [("cio_relationships", "type")],
    ),
    (
        "relationships-empty",
        person("delete_relationships", cio_relationships=[]),
        [("cio_relationships", "min_items")],
    ),
    (
        "relationship-entry-string",
        person("add_relationships", cio_relationships=["acme"]),
        [("cio_relationships[0]", "type")],
    ),
    (
        "relationship-identifiers-missing",
        person("add_relationships", cio_relationships=[{"relationship_attributes": {}}]),
        [("cio_relationships[0].identifiers", "required")],
    ),
    (
        "relationship-unknown-key",
        person("add_relationships", cio_relationships=[{"identifiers": OBJ, "role": "x"}]),
        [("cio_relationships[0].role", "unknown_field")],
    ),
    (
        "relationship-attributes-list",
        person(
            "add_relationships",
            cio_relationships=[{"identifiers": OBJ, "relationship_attributes": []}],
        ),
        [("cio_relationships[0].relationship_attributes", "type")],
    ),
    (
        "relationship-person-to-person",
        person("add_relationships", cio_relationships=[{"identifiers": {"id": "7"}}]),
        [("cio_relationships[0].identifiers", "one_identifier")],
    ),
    (
        "object-identifiers-half",
        {**obj("delete"), "identifiers": {"object_id": "acme"}},
        [("identifiers", "one_identifier")],
    ),
    (
        "object-type-id-integer",
        {**obj("delete"), "identifiers": {"object_type_id": 1, "object_id": "acme"}},
        [("identifiers.object_type_id", "type")],
    ),
    (
        "object-type-id-word",
        {**obj("delete"), "identifiers": {"object_type_id": "company", "object_id": "acme"}},
        [("identifiers.object_type_id", "format")],
    ),
    (
        "object-type-id-zero",
        {**obj("delete"), "identifiers": {"object_type_id": "0", "object_id": "acme"}},
        [("identifiers.object_type_id", "format")],
    ),
    (
        "object-relationship-phone",
        obj("add_relationships", cio_relationships=[{"identifiers": {"phone": "+1555"}}]),
        [("cio_relationships[0].identifiers", "one_identifier")],
    ),
    (
        "object-timestamp-unknown",
        obj("identify", timestamp=1_700_000_000),
        [("timestamp", "unknown_field")],
    ),
    ("anonymous-nobody", obj("identify_anonymous"), [("cio_relationships", "required")]),
    (
        "anonymous-with-id",
        obj("identify_anonymous", cio_relationships=[{"identifiers": {"id": "1"}}]),
        [("cio_relationships[0].identifiers", "one_identifier")],
    ),
    (
        "delivery-email",
        delivery(identifiers={"email": "a@b"}),
        [("identifiers", "one_identifier")],
    ),
    ("delivery-clicked", delivery(name="clicked"), [("name", "enum")]),
    ("delivery-name-missing", delivery(name=None), [("name", "required")]),
    ("delivery-attributes-missing", delivery(attributes=None), [("attributes", "required")]),
    ("delivery-token-missing", delivery(attributes={}), [("attributes.device_token", "required")]),
    ("delivery-id-not-ulid", delivery(id="x"), [("id", "format")]),
]


#: Cases of cioq's opt-in rules (docs/validation-rules.md "Opt-in strictness"): refused
#: only for a workspace with ``strict_validation``; Customer.io states no such refusal.
STRICT_ONLY = frozenset(
    {
        "timestamp-float",
        "timestamp-ms",
        "timestamp-negative",
        "event-id-uuid",
        "event-id-overflow",
        "event-id-letter-u",
        "event-timestamp-ms",
        "device-last-used-ms",
        "relationships-empty",
        "delivery-id-not-ulid",
        "anonymous-nobody",
    }
)
STRICT = Limits(strict=True)


@pytest.mark.parametrize(("name", "op", "expected"), INVALID, ids=[name for name, _, _ in INVALID])
def test_invalid_ops_name_field_and_rule(
    name: str, op: object, expected: list[tuple[str, str]]
) -> None:
    """Each broken rule gives exactly the expected (field, rule) errors."""
    errors = validate_op(op, limits=STRICT if name in STRICT_ONLY else DEFAULT_LIMITS)
    assert pairs(errors) == sorted(expected)
    assert all(e.message.startswith(e.field) for e in errors)


@pytest.mark.parametrize(
    "op", [op for name, op, _ in INVALID if name in STRICT_ONLY], ids=sorted(STRICT_ONLY)
)
def test_opt_in_rules_do_not_apply_by_default(op: object) -> None:
    """A drop-in workspace takes what only cioq's opt-in strictness refuses."""
    assert validate_op(op) == []


def test_where_prefixes_every_field() -> None:
    """`where` prefixes paths, and a non-object op is named by `where` itself."""
    op = person("identify", identifiers={"id": 5}, attributes={"_update": 1})
    errors = validate_op(op, where="batch[3]")
    assert pairs(errors) == [
        ("batch[3].attributes._update", "type"),
        ("batch[3].identifiers.id", "type"),
    ]
    assert all(e.message.startswith(e.field) for e in errors)
    assert pairs(validate_op(7, where="batch[0]")) == [("batch[0]", "type")]


def test_typo_hints_at_the_right_field() -> None:
    """A misspelt `identifiers` is required by name and the typo suggests it."""
    errors = validate_op({"type": "person", "action": "delete", "identifier": {"id": "1"}})
    by_rule = {e.rule: e for e in errors}
    assert by_rule["required"].field == "identifiers"
    assert "did you mean 'identifiers'" in by_rule["unknown_field"].message


def _attrs_total(count: int, value: str) -> dict[str, str]:
    """`count` attributes named n000.. (4 bytes each) holding `value`."""
    return {f"n{i:03d}": value for i in range(count)}


# (name, build(at_limit: bool) -> op, field, limit)
LIMITS: list[tuple[str, Any, str, int]] = [
    (
        "id-150",
        lambda ok: person("delete", identifiers={"id": E2 * 75 + ("" if ok else "a")}),
        "identifiers.id",
        150,
    ),
    (
        "email-150",
        lambda ok: person("delete", identifiers={"email": E3 * 49 + "@b" + ("c" if ok else "cd")}),
        "identifiers.email",
        150,
    ),
    (
        "anonymous-id-150",
        lambda ok: {
            **person("event", name="x"),
            "identifiers": {"anonymous_id": E4 * 37 + ("ab" if ok else "abc")},
        },
        "identifiers.anonymous_id",
        150,
    ),
    (
        "object-id-150",
        lambda ok: {
            **obj("delete"),
            "identifiers": {"object_type_id": "1", "object_id": E2 * 75 + ("" if ok else "a")},
        },
        "identifiers.object_id",
        150,
    ),
    (
        "merge-primary-150",
        lambda ok: {
            "type": "person",
            "action": "merge",
            "primary": {"cio_id": E3 * 50 + ("" if ok else "a")},
            "secondary": {"id": "2"},
        },
        "primary.cio_id",
        150,
    ),
    (
        "attribute-name-150",
        lambda ok: person("identify", attributes={E3 * 50 + ("" if ok else "a"): 1}),
        "attributes." + E3 * 50 + "a",
        150,
    ),
    (
        "attribute-value-1000",
        lambda ok: person("identify", attributes={"bio": E4 * 250 + ("" if ok else "a")}),
        "attributes.bio",
        1000,
    ),
    (
        "attribute-json-value-1000",
        lambda ok: person("identify", attributes={"tags": [E2 * 498 + ("" if ok else "a")]}),
        "attributes.tags",
        1000,
    ),
    (
        "attributes-300",
        lambda ok: person("identify", attributes={f"a{i}": i for i in range(300 if ok else 301)}),
        "attributes",
        300,
    ),
    (
        "relationship-attributes-300",
        lambda ok: person(
            "add_relationships",
            cio_relationships=[
                {
                    "identifiers": OBJ,
                    "relationship_attributes": {f"a{i}": E2 for i in range(300 if ok else 301)},
                }
            ],
        ),
        "cio_relationships[0].relationship_attributes",
        300,
    ),
    (
        "event-name-100",
        lambda ok: person("event", name=E2 * 50 + ("" if ok else "a")),
        "name",
        100,
    ),
    (
        # {"k":"..."} is 8 bytes around the string.
        "event-data-100000",
        lambda ok: person("event", name="x", attributes={"k": E4 * 24_998 + ("" if ok else "a")}),
        "attributes",
        100_000,
    ),
    (
        # 100 attributes of 4-byte name + 996-byte value.
        "object-attributes-total-100000",
        lambda ok: obj(
            "identify",
            attributes={**_attrs_total(99, E3 * 332), "n099": E3 * 332 + ("" if ok else "a")},
        ),
        "attributes",
        100_000,
    ),
]


@pytest.mark.parametrize(
    ("build", "field", "limit"),
    [(build, field, limit) for _, build, field, limit in LIMITS],
    ids=[name for name, _, _, _ in LIMITS],
)
def test_limit_is_inclusive_and_one_over_is_one_error(build: Any, field: str, limit: int) -> None:
    """At the limit the op passes; one byte or item over gives one error naming field and limit."""
    assert validate_op(build(True)) == []
    [error] = validate_op(build(False))
    assert (error.field, error.limit, error.actual) == (field, limit, limit + 1)
    assert error.rule in ("max_bytes", "max_items")
    assert str(limit) in error.message


def _op_of_size(size: int) -> bytes:
    """A serialized identify op of exactly `size` bytes, padded with 2-byte characters."""
    base = len(orjson.dumps(person("identify", attributes={"pad": ""})))
    pad = size - base
    op = person("identify", attributes={"pad": E2 * (pad // 2) + "a" * (pad % 2)})
    payload = orjson.dumps(op)
    assert len(payload) == size
    return payload


@pytest.mark.parametrize(
    ("where", "field"), [("", "op"), ("batch[2]", "batch[2]")], ids=["entity", "batch"]
)
def test_op_size_limit(where: str, field: str) -> None:
    """An op of 32,768 bytes fits; one byte more is one error naming the op and the limit."""
    assert op_size_error(_op_of_size(32_768), where=where, limits=DEFAULT_LIMITS) is None
    error = op_size_error(_op_of_size(32_769), where=where, limits=DEFAULT_LIMITS)
    assert error is not None
    assert (error.field, error.rule, error.limit, error.actual) == (
        field,
        "max_bytes",
        32_768,
        32_769,
    )


def test_limits_are_configurable() -> None:
    """A smaller Limits value tightens the same rule."""
    op = person("delete", identifiers={"id": "abcd"})
    assert validate_op(op) == []
    [error] = validate_op(op, limits=Limits(max_id_bytes=3))
    assert (error.field, error.limit, error.actual) == ("identifiers.id", 3, 4)


def test_is_ulid_accepts_generated_ids() -> None:
    """The ULID check agrees with python-ulid's own output."""
    from service.jobs import new_event_id

    assert all(is_ulid(new_event_id()) for _ in range(100))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
KINDS = st.sampled_from(["person", "object", "delivery", "other"])
ACTIONS = st.sampled_from(sorted({a for acts in ACTIONS_BY_TYPE.values() for a in acts}))
FIELDS = st.sampled_from(
    [
        "identifiers",
        "attributes",
        "name",
        "id",
        "timestamp",
        "device",
        "cio_relationships",
        "primary",
        "secondary",
        "anonymous_id",
        "extra",
        "",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    kind=KINDS,
    action=ACTIONS,
    fields=st.dictionaries(FIELDS, JSON, max_size=5),
)
def test_validate_op_is_total(kind: str, action: str, fields: dict[str, Any]) -> None:
    """Any JSON for any type/action gives FieldErrors, never an exception, each path-led."""
    errors = validate_op({"type": kind, "action": action, **fields}, where="batch[0]")
    assert all(isinstance(e, FieldError) for e in errors)
    assert all(e.field.startswith("batch[0]") and e.message.startswith(e.field) for e in errors)
    bare = validate_op({"type": kind, "action": action, **fields})
    assert all(e.field and e.message.startswith(e.field) for e in bare)
