"""The sandbox's Customer.io validation rules, one table row per case."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.rules import (
    ACTIONS_BY_TYPE,
    check_form,
    check_op,
    check_segment_ids,
    check_v1_event,
)

MAX_OP_BYTES = 32_768
PERSON = {"type": "person", "identifiers": {"id": "42"}}
OBJECT = {"type": "object", "identifiers": {"object_type_id": "1", "object_id": "acme"}}
RELATIONSHIPS = [{"identifiers": {"object_type_id": "1", "object_id": "acme"}}]
DELIVERY = {
    "type": "delivery",
    "action": "event",
    "identifiers": {"id": "dlv-1"},
    "name": "opened",
    "attributes": {"device_token": "tok"},
}


def person(action: str, **fields: Any) -> dict[str, Any]:
    return {**PERSON, "action": action, **fields}


def obj(action: str, **fields: Any) -> dict[str, Any]:
    return {**OBJECT, "action": action, **fields}


def delivery(**fields: Any) -> dict[str, Any]:
    return {**DELIVERY, **fields}


def without(op: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in op.items() if k != key}


VALID_OPS = [
    pytest.param(delivery(attributes={"device_token": ""}), id="delivery-empty-token"),
    pytest.param(person("identify", attributes={"plan": "pro"}), id="person-identify-id"),
    pytest.param({**person("identify"), "identifiers": {"email": "a@b.c"}}, id="by-email"),
    pytest.param({**person("identify"), "identifiers": {"phone": "+15551234567"}}, id="by-phone"),
    pytest.param({**person("identify"), "identifiers": {"cio_id": "a3000001"}}, id="by-cio-id"),
    pytest.param(person("delete"), id="person-delete"),
    pytest.param(person("suppress"), id="person-suppress"),
    pytest.param(person("unsuppress"), id="person-unsuppress"),
    pytest.param(person("event", name="purchased"), id="person-event"),
    pytest.param(person("page", name="/pricing"), id="person-page"),
    pytest.param(person("screen", name="Home"), id="person-screen"),
    pytest.param(person("event", name="x" * 100), id="event-name-100-bytes"),
    pytest.param(
        {**person("event", name="viewed"), "identifiers": {"anonymous_id": "anon-1"}},
        id="anonymous-event",
    ),
    pytest.param(
        {**person("page", name="/"), "identifiers": {"anonymous_id": "anon-1"}},
        id="anonymous-page",
    ),
    pytest.param(person("add_device", device={"token": "t", "platform": "ios"}), id="ios"),
    pytest.param(person("add_device", device={"token": "t", "platform": "android"}), id="android"),
    pytest.param(person("delete_device", device={"token": "t"}), id="delete-device"),
    pytest.param(person("add_relationships", cio_relationships=RELATIONSHIPS), id="p-add-rel"),
    pytest.param(person("delete_relationships", cio_relationships=RELATIONSHIPS), id="p-del-rel"),
    pytest.param(
        {"type": "person", "action": "merge", "primary": {"id": "1"}, "secondary": {"email": "e"}},
        id="merge",
    ),
    pytest.param(obj("identify", attributes={"name": "Acme"}), id="object-identify"),
    pytest.param({**obj("identify"), "identifiers": {"cio_object_id": "o1"}}, id="cio-object-id"),
    pytest.param(obj("identify_anonymous", cio_relationships=[]), id="object-identify-anonymous"),
    pytest.param(obj("delete"), id="object-delete"),
    pytest.param(obj("add_relationships", cio_relationships=[{}]), id="object-add-rel"),
    pytest.param(obj("delete_relationships", cio_relationships=[{}]), id="object-del-rel"),
    pytest.param(delivery(), id="delivery-opened"),
    # The document sets no minLength on a token and no minItems on relationships.
    pytest.param(person("add_device", device={"token": "", "platform": "ios"}), id="empty-token"),
    pytest.param(person("delete_relationships", cio_relationships=[]), id="empty-rel"),
    pytest.param(delivery(name="converted"), id="delivery-converted"),
    pytest.param(delivery(name="delivered"), id="delivery-delivered"),
]


@pytest.mark.parametrize("op", VALID_OPS)
def test_valid_ops_pass(op: dict[str, Any]) -> None:
    """Every documented type/action with its required fields is accepted."""
    assert check_op(op, MAX_OP_BYTES) is None


INVALID_OPS = [
    # (op, reason, field)
    pytest.param([PERSON], "invalid", "op", id="not-an-object"),
    pytest.param(
        person("identify", attributes={"pad": "x" * MAX_OP_BYTES}), "too_large", "op", id="32kb"
    ),
    pytest.param({"action": "identify"}, "required", "type", id="no-type"),
    pytest.param({"type": "account", "action": "identify"}, "invalid", "type", id="bad-type"),
    pytest.param({"type": ["person"], "action": "identify"}, "invalid", "type", id="list-type"),
    pytest.param(PERSON, "required", "action", id="no-action"),
    pytest.param(person("track"), "invalid", "action", id="unknown-action"),
    pytest.param(person({"a": 1}), "invalid", "action", id="dict-action"),  # type: ignore[arg-type]
    pytest.param(obj("event", name="x"), "invalid", "action", id="object-event"),
    pytest.param(obj("merge"), "invalid", "action", id="object-merge"),
    pytest.param({**DELIVERY, "action": "identify"}, "invalid", "action", id="delivery-identify"),
    pytest.param(
        without(person("identify"), "identifiers"), "required", "identifiers", id="no-ids"
    ),
    pytest.param(
        {**person("identify"), "identifiers": {"id": "1", "email": "e"}},
        "invalid",
        "identifiers",
        id="two-identifiers",
    ),
    pytest.param({**person("delete"), "identifiers": {}}, "invalid", "identifiers", id="empty-ids"),
    pytest.param({**person("delete"), "identifiers": "42"}, "invalid", "identifiers", id="str-ids"),
    pytest.param(
        {**person("identify"), "identifiers": {"user_id": "1"}}, "invalid", "identifiers", id="key"
    ),
    pytest.param(
        {**person("identify"), "identifiers": {"anonymous_id": "a"}},
        "invalid",
        "identifiers",
        id="anonymous-identify",
    ),
    pytest.param(
        {**person("identify"), "identifiers": {"id": ""}}, "invalid", "identifiers.id", id="empty"
    ),
    pytest.param(
        {**person("identify"), "identifiers": {"id": 42}}, "invalid", "identifiers.id", id="int-id"
    ),
    pytest.param(
        {**person("event", name="e"), "identifiers": {"anonymous_id": None}},
        "invalid",
        "identifiers.anonymous_id",
        id="null-anonymous-id",
    ),
    pytest.param(person("event"), "required", "name", id="event-no-name"),
    pytest.param(person("page", name=""), "required", "name", id="page-blank-name"),
    pytest.param(person("screen", name=7), "invalid", "name", id="screen-int-name"),
    pytest.param(person("event", name="x" * 101), "too_large", "name", id="name-101-bytes"),
    pytest.param(person("event", name="é" * 51), "too_large", "name", id="name-102-utf8-bytes"),
    pytest.param(person("add_device"), "required", "device", id="no-device"),
    pytest.param(person("add_device", device="tok"), "invalid", "device", id="device-str"),
    pytest.param(
        person("add_device", device={"platform": "ios"}), "required", "device.token", id="no-token"
    ),
    pytest.param(
        person("add_device", device={"token": "t"}), "required", "device.platform", id="no-platform"
    ),
    pytest.param(
        person("add_device", device={"token": "t", "platform": "windows"}),
        "invalid",
        "device.platform",
        id="bad-platform",
    ),
    pytest.param(
        person("add_device", device={"token": "t", "platform": ["ios"]}),
        "invalid",
        "device.platform",
        id="list-platform",
    ),
    pytest.param(
        person("add_device", device={"id": "t", "platform": "ios"}),
        "required",
        "device.token",
        id="v1-device-id",
    ),
    pytest.param(person("delete_device", device={}), "required", "device.token", id="del-no-tok"),
    pytest.param(person("add_relationships"), "required", "cio_relationships", id="no-rel"),
    pytest.param(
        person("add_relationships", cio_relationships={}),
        "invalid",
        "cio_relationships",
        id="dict-rel",
    ),
    pytest.param(
        person("merge", primary={"id": "1"}, secondary={"id": "2"}),
        "invalid",
        "identifiers",
        id="merge-with-identifiers",
    ),
    pytest.param(
        {"type": "person", "action": "merge", "secondary": {"id": "2"}},
        "required",
        "primary",
        id="merge-no-primary",
    ),
    pytest.param(
        {"type": "person", "action": "merge", "primary": {"id": "1"}},
        "required",
        "secondary",
        id="merge-no-secondary",
    ),
    pytest.param(
        {"type": "person", "action": "merge", "primary": {"phone": "+1"}, "secondary": {"id": "2"}},
        "invalid",
        "primary",
        id="merge-phone",
    ),
    pytest.param(
        {"type": "person", "action": "merge", "primary": {"id": ""}, "secondary": {"id": "2"}},
        "invalid",
        "primary",
        id="merge-empty-id",
    ),
    pytest.param(
        {
            "type": "person",
            "action": "merge",
            "primary": {"id": "1"},
            "secondary": {"id": "2", "email": "e"},
        },
        "invalid",
        "secondary",
        id="merge-two-ids",
    ),
    pytest.param(without(obj("identify"), "identifiers"), "required", "identifiers", id="obj-no"),
    pytest.param(
        {**obj("identify"), "identifiers": {"object_id": "acme"}},
        "invalid",
        "identifiers",
        id="obj-no-type-id",
    ),
    pytest.param(
        {**obj("identify"), "identifiers": {"id": "acme"}}, "invalid", "identifiers", id="obj-id"
    ),
    pytest.param(
        {**obj("identify"), "identifiers": ["acme"]}, "invalid", "identifiers", id="obj-list-ids"
    ),
    pytest.param(
        {**obj("identify"), "identifiers": {"object_type_id": 1, "object_id": "acme"}},
        "invalid",
        "identifiers.object_type_id",
        id="obj-int-type-id",
    ),
    pytest.param(
        {**obj("delete"), "identifiers": {"cio_object_id": ""}},
        "invalid",
        "identifiers.cio_object_id",
        id="obj-empty-cio-object-id",
    ),
    pytest.param(obj("add_relationships"), "required", "cio_relationships", id="obj-no-rel"),
    pytest.param(without(DELIVERY, "identifiers"), "required", "identifiers", id="dlv-no-ids"),
    pytest.param(
        delivery(identifiers={"id": "d", "email": "e"}), "invalid", "identifiers", id="dlv-2-ids"
    ),
    pytest.param(delivery(identifiers={"id": 5}), "invalid", "identifiers.id", id="dlv-int-id"),
    pytest.param(without(DELIVERY, "name"), "required", "name", id="dlv-no-name"),
    pytest.param(delivery(name="clicked"), "invalid", "name", id="dlv-clicked"),
    pytest.param(delivery(name=["opened"]), "invalid", "name", id="dlv-list-name"),
    pytest.param(
        without(DELIVERY, "attributes"), "required", "attributes.device_token", id="dlv-no-attrs"
    ),
    pytest.param(delivery(attributes={}), "required", "attributes.device_token", id="dlv-no-token"),
    pytest.param(
        delivery(attributes={"device_token": 5}),
        "invalid",
        "attributes.device_token",
        id="dlv-int-token",
    ),
]


@pytest.mark.parametrize(("op", "reason", "field"), INVALID_OPS)
def test_invalid_ops_name_reason_and_field(op: Any, reason: str, field: str) -> None:
    """Each broken op is refused with Customer.io's reason and the exact field path."""
    error = check_op(op, MAX_OP_BYTES)
    assert error is not None
    assert (error["reason"], error["field"]) == (reason, field)
    assert error["message"]


def test_op_size_limit_is_inclusive() -> None:
    """An op of exactly max_op_bytes passes; one byte more is too_large."""
    base = person("identify", attributes={"pad": ""})
    pad = MAX_OP_BYTES - len(orjson.dumps(base))
    at_limit = person("identify", attributes={"pad": "x" * pad})
    over = person("identify", attributes={"pad": "x" * (pad + 1)})
    assert len(orjson.dumps(at_limit)) == MAX_OP_BYTES
    assert check_op(at_limit, MAX_OP_BYTES) is None
    assert check_op(over, MAX_OP_BYTES) == {
        "reason": "too_large",
        "field": "op",
        "message": f"operation is {MAX_OP_BYTES + 1} bytes; limit {MAX_OP_BYTES}",
    }


def test_first_broken_rule_wins() -> None:
    """An op with several faults reports the earliest rule: type before action."""
    error = check_op({"identifiers": {}}, MAX_OP_BYTES)
    assert error is not None
    assert error["field"] == "type"


# The range orjson.loads produces: larger integers arrive as floats.
wire_integers = st.integers(min_value=-(2**63), max_value=2**64 - 1)
json_values = st.recursive(
    st.none() | st.booleans() | wire_integers | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
op_fields = st.fixed_dictionaries(
    {
        "type": st.sampled_from([*ACTIONS_BY_TYPE, "x"]) | json_values,
        "action": st.sampled_from(sorted(set().union(*ACTIONS_BY_TYPE.values()))) | json_values,
    },
    optional=dict.fromkeys(
        (
            "identifiers",
            "name",
            "device",
            "attributes",
            "primary",
            "secondary",
            "cio_relationships",
        ),
        json_values,
    ),
)


@given(op=op_fields | json_values)
def test_any_json_gets_an_answer_not_an_exception(op: Any) -> None:
    """Arbitrary JSON is either accepted or refused with a known reason; it never raises."""
    error = check_op(op, MAX_OP_BYTES)
    assert error is None or error["reason"] in {"required", "invalid", "too_large"}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"ids": ["1"]}, None),
        ({"ids": list(range(1000))}, None),
        ({"ids": []}, "ids must be a non-empty list"),
        ({"ids": "1,2"}, "ids must be a non-empty list"),
        ({}, "ids must be a non-empty list"),
        (None, "ids must be a non-empty list"),
        ({"ids": list(range(1001))}, "ids cannot hold more than 1000 items"),
    ],
)
def test_segment_ids(body: Any, problem: str | None) -> None:
    """Manual segment add/remove takes 1 to 1000 ids."""
    assert check_segment_ids(body) == problem


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"name": "signed_up"}, None),
        ({"name": "x" * 100, "data": {}}, None),
        ({"name": "  "}, "event name must not be blank"),
        ({"data": {}}, "event name must not be blank"),
        ([], "event name must not be blank"),
        ({"name": "x" * 101}, "event name cannot be longer than 100 bytes"),
    ],
)
def test_v1_event(body: Any, problem: str | None) -> None:
    """v1 events need a non-blank name of at most 100 bytes."""
    assert check_v1_event(body) == problem


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"data": {"email": "a@b.c"}}, None),
        ({"data": "email=a@b.c"}, "data must be an object"),
        (None, "data must be an object"),
    ],
)
def test_form_submission(body: Any, problem: str | None) -> None:
    """A form submission carries its fields in a `data` object."""
    assert check_form(body) == problem
