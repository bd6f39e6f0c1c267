"""v1 → v2 translation: one exact op per endpoint, errors in the producer's own field names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import InvalidRequest
from service.lanes.track import delivery_events as delivery
from service.lanes.track import translate
from service.lanes.track.limits import Limits
from service.lanes.track.validation import validate_op
from service.lanes.track.validation_rules import is_ulid

ULID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
FIXED_ID = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
APNS = "a1" * 32
FCM = "fMx0yQ:APA91bH-" + "x" * 40
OBJ = {"object_type_id": "1", "object_id": "acme"}
E2, E3, E4 = "é", "€", "😀"


@pytest.fixture
def fixed_event_id(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Generated event ids are FIXED_ID, so expected ops can be written out exactly."""
    monkeypatch.setattr(translate, "new_event_id", lambda: FIXED_ID)
    monkeypatch.setattr(delivery, "new_event_id", lambda: FIXED_ID)
    yield


def person(action: str, ident: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
    """The expected v2 person op for `ident` (id 42 by default)."""
    return {"type": "person", "action": action, "identifiers": ident or {"id": "42"}, **fields}


def push_op(name: str, token: str, **fields: Any) -> dict[str, Any]:
    """The expected v2 delivery event for delivery d1."""
    op = {"type": "delivery", "action": "event", "identifiers": {"id": "d1"}, "name": name}
    return {**op, "id": FIXED_ID, **fields, "attributes": {"device_token": token}}


Call = Callable[[], object]

# §6 of the reference: one row per v1 endpoint (and per shape worth pinning).
MAPPING: list[tuple[str, Call, object]] = [
    (
        "identify",
        lambda: translate.identify(
            "42",
            {
                "email": "j@x.co",
                "first_name": "Jane",
                "_timestamp": 1_700_000_000,
                "_update": True,
                "cio_relationships": {
                    "action": "add_relationships",
                    "relationships": [{"identifiers": OBJ, "relationship_attributes": {"r": 1}}],
                },
            },
        ),
        person(
            "identify",
            attributes={"email": "j@x.co", "first_name": "Jane", "_update": True},
            timestamp=1_700_000_000,
            cio_relationships=[{"identifiers": OBJ, "relationship_attributes": {"r": 1}}],
        ),
    ),
    ("identify-empty-body", lambda: translate.identify("42", {}), person("identify")),
    (
        "identify-by-cio-id-sets-email",
        lambda: translate.identify("cio_a3000001", {"email": "new@x.co"}),
        person("identify", {"cio_id": "a3000001"}, attributes={"email": "new@x.co"}),
    ),
    (
        "identify-integer-id-in-body",
        lambda: translate.identify("5", {"id": 5, "plan": "pro"}),
        person("identify", {"id": "5"}, attributes={"id": "5", "plan": "pro"}),
    ),
    (
        "identify-delete-relationships",
        lambda: translate.identify(
            "a@b.co",
            {
                "cio_relationships": {
                    "action": "delete_relationships",
                    "relationships": [{"identifiers": OBJ}],
                }
            },
        ),
        person(
            "delete_relationships", {"email": "a@b.co"}, cio_relationships=[{"identifiers": OBJ}]
        ),
    ),
    ("delete", lambda: translate.delete("42"), person("delete")),
    ("suppress", lambda: translate.suppress("42"), person("suppress")),
    ("unsuppress", lambda: translate.unsuppress("42"), person("unsuppress")),
    (
        "track-event",
        lambda: translate.track(
            "42", {"name": "buy", "id": ULID, "timestamp": 1_700_000_000, "data": {"p": 9}}
        ),
        person("event", name="buy", id=ULID, timestamp=1_700_000_000, attributes={"p": 9}),
    ),
    (
        "track-event-gets-an-id",
        lambda: translate.track("42", {"name": "buy"}),
        person("event", name="buy", id=FIXED_ID),
    ),
    (
        "track-page",
        lambda: translate.track("42", {"type": "page", "name": "/pricing", "data": {}}),
        person("page", name="/pricing", id=FIXED_ID, attributes={}),
    ),
    (
        "track-screen",
        lambda: translate.track("42", {"type": "screen", "name": "home"}),
        person("screen", name="home", id=FIXED_ID),
    ),
    (
        "track-anonymous",
        lambda: translate.track_anonymous({"name": "view", "anonymous_id": "an1", "data": {}}),
        person("event", {"anonymous_id": "an1"}, name="view", id=FIXED_ID, attributes={}),
    ),
    (
        "track-anonymous-invite-stays-v1",
        lambda: translate.track_anonymous({"name": "invite", "data": {"recipient": "a@b.co"}}),
        None,
    ),
    (
        "add-device",
        lambda: translate.add_device(
            "42",
            {
                "device": {
                    "id": "tok",
                    "platform": "ios",
                    "last_used": 1_700_000_000,
                    "attributes": {"app_version": "2.1"},
                }
            },
        ),
        person(
            "add_device",
            device={
                "token": "tok",
                "platform": "ios",
                "last_used": 1_700_000_000,
                "attributes": {"app_version": "2.1"},
            },
        ),
    ),
    (
        "add-device-sdk-kwargs",
        lambda: translate.add_device(
            "42",
            {"device": {"push_enabled": True, "build": 7, "id": "tok", "platform": "android"}},
        ),
        person(
            "add_device",
            device={
                "token": "tok",
                "platform": "android",
                "attributes": {"push_enabled": "true", "build": "7"},
            },
        ),
    ),
    (
        "delete-device",
        lambda: translate.delete_device("42", "tok"),
        person("delete_device", device={"token": "tok"}),
    ),
    (
        "merge",
        lambda: translate.merge({"primary": {"id": "1"}, "secondary": {"email": "x@y.co"}}),
        {
            "type": "person",
            "action": "merge",
            "primary": {"id": "1"},
            "secondary": {"email": "x@y.co"},
        },
    ),
    (
        "push-event",
        lambda: delivery.push_event(
            {"delivery_id": "d1", "event": "opened", "device_id": "tok", "timestamp": 1_700_000_000}
        ),
        push_op("opened", "tok", timestamp=1_700_000_000),
    ),
    (
        "metric-push-apns",
        lambda: delivery.metric({"delivery_id": "d1", "metric": "delivered", "recipient": APNS}),
        push_op("delivered", APNS),
    ),
    (
        "metric-push-fcm",
        lambda: delivery.metric(
            {"delivery_id": "d1", "metric": "converted", "recipient": FCM, "timestamp": 5}
        ),
        push_op("converted", FCM, timestamp=5),
    ),
    (
        "metric-email-stays-v1",
        lambda: delivery.metric({"delivery_id": "d1", "metric": "opened", "recipient": "a@b.co"}),
        None,
    ),
    (
        "metric-clicked-stays-v1",
        lambda: delivery.metric({"delivery_id": "d1", "metric": "clicked", "recipient": APNS}),
        None,
    ),
    (
        "metric-href-stays-v1",
        lambda: delivery.metric(
            {"delivery_id": "d1", "metric": "opened", "recipient": APNS, "href": "https://x"}
        ),
        None,
    ),
    (
        "segment-ids-have-no-v2-op",
        lambda: translate.segment_ids({"ids": ["1", "2"]}),
        None,
    ),
]


@pytest.mark.parametrize(
    ("call", "expected"),
    [(call, expected) for _, call, expected in MAPPING],
    ids=[name for name, _, _ in MAPPING],
)
@pytest.mark.usefixtures("fixed_event_id")
def test_v1_maps_to_exact_v2_op(call: Call, expected: object) -> None:
    """Each v1 endpoint becomes exactly the op §6 describes (None: forwarded to v1)."""
    got = call()
    assert got == expected
    if isinstance(got, dict):
        assert validate_op(got) == []


PATHS: list[tuple[str, str, dict[str, str]]] = [
    ("plain-id", "42", {"id": "42"}),
    ("cio-prefix", "cio_abc", {"cio_id": "abc"}),
    ("decoded-email", "a@b", {"email": "a@b"}),
    ("slash-in-id", "a/b", {"id": "a/b"}),
    ("phone-is-an-id", "+14155552671", {"id": "+14155552671"}),
    ("uppercase-cio-is-an-id", "CIO_abc", {"id": "CIO_abc"}),
    ("multibyte-150", E2 * 75, {"id": E2 * 75}),
]


@pytest.mark.parametrize(
    ("raw", "expected"), [(r, e) for _, r, e in PATHS], ids=[n for n, _, _ in PATHS]
)
def test_identifiers_from_path(raw: str, expected: dict[str, str]) -> None:
    """The path value's shape picks cio_id, email or id; cio_ is stripped."""
    assert translate.identifiers_from_path(raw) == expected


def fails(call: Call) -> list[tuple[str, str]]:
    """The sorted (field, rule) pairs of the InvalidRequest `call` raises."""
    with pytest.raises(InvalidRequest) as caught:
        call()
    errors = caught.value.errors
    assert all(e.message.startswith(e.field) for e in errors), errors
    return sorted((e.field, e.rule) for e in errors)


def _dev(**device: Any) -> dict[str, Any]:
    """An add_device body around a valid device with `device` replacing its fields."""
    return {"device": {"id": "tok", "platform": "ios", **device}}


STRICT = Limits(strict=True)

ERRORS: list[tuple[str, Call, list[tuple[str, str]]]] = [
    ("path-empty", lambda: translate.delete(""), [("identifier", "required")]),
    ("path-cio-empty", lambda: translate.delete("cio_"), [("identifier", "required")]),
    ("path-cio-dash", lambda: translate.suppress("cio_a-b"), [("identifier", "format")]),
    ("identify-body-list", lambda: translate.identify("1", [1]), [("body", "type")]),
    (
        "identify-timestamp-float",
        lambda: translate.identify("1", {"_timestamp": 1.5}),
        [("_timestamp", "seconds")],
    ),
    (
        "identify-update-string",
        lambda: translate.identify("1", {"_update": "true"}),
        [("_update", "type")],
    ),
    (
        "identify-relationships-list",
        lambda: translate.identify("1", {"cio_relationships": []}),
        [("cio_relationships", "type")],
    ),
    (
        "identify-relationships-action",
        lambda: translate.identify(
            "1", {"cio_relationships": {"action": "replace", "relationships": []}}
        ),
        [("cio_relationships.action", "enum")],
    ),
    (
        "identify-relationships-missing-list",
        lambda: translate.identify("1", {"cio_relationships": {"action": "add_relationships"}}),
        [("cio_relationships.relationships", "required")],
    ),
    (
        "identify-relationship-bad-identifiers",
        lambda: translate.identify(
            "1",
            {
                "cio_relationships": {
                    "action": "add_relationships",
                    "relationships": [{"identifiers": {"object_id": "a"}}],
                }
            },
        ),
        [("cio_relationships.relationships[0].identifiers", "one_identifier")],
    ),
    (
        "identify-delete-relationships-with-attributes",
        lambda: translate.identify(
            "1",
            {
                "plan": "pro",
                "cio_relationships": {
                    "action": "delete_relationships",
                    "relationships": [{"identifiers": OBJ}],
                },
            },
        ),
        [("cio_relationships.action", "enum")],
    ),
    ("track-name-missing", lambda: translate.track("1", {"data": {}}), [("name", "required")]),
    (
        "track-data-string",
        lambda: translate.track("1", {"name": "x", "data": ""}),
        [("data", "type")],
    ),
    (
        "track-id-uuid",
        lambda: translate.track("1", {"name": "x", "id": "a-b"}, limits=STRICT),
        [("id", "format")],
    ),
    (
        "track-timestamp-ms",
        lambda: translate.track("1", {"name": "x", "timestamp": 1_700_000_000_000}, limits=STRICT),
        [("timestamp", "seconds")],
    ),
    (
        "track-type-click",
        lambda: translate.track("1", {"name": "x", "type": "click"}),
        [("type", "enum")],
    ),
    (
        "track-v2-attributes",
        lambda: translate.track("1", {"name": "x", "attributes": {}}, limits=STRICT),
        [("attributes", "unknown_field")],
    ),
    (
        "anonymous-id-number",
        lambda: translate.track_anonymous({"name": "x", "anonymous_id": 7}),
        [("anonymous_id", "type")],
    ),
    (
        "anonymous-id-empty",
        lambda: translate.track_anonymous({"name": "x", "anonymous_id": ""}),
        [("anonymous_id", "required")],
    ),
    (
        "invite-name-missing",
        lambda: translate.check_anonymous_v1({"data": {}}),
        [("name", "required")],
    ),
    (
        "invite-data-list",
        lambda: translate.check_anonymous_v1({"name": "x", "data": []}),
        [("data", "type")],
    ),
    ("device-missing", lambda: translate.add_device("1", {}), [("device", "required")]),
    (
        "device-id-missing",
        lambda: translate.add_device("1", {"device": {"platform": "ios"}}),
        [("device.id", "required")],
    ),
    (
        "device-platform-web",
        lambda: translate.add_device("1", _dev(platform="web")),
        [("device.platform", "enum")],
    ),
    (
        "device-last-used-float",
        lambda: translate.add_device("1", _dev(last_used=1.5)),
        [("device.last_used", "seconds")],
    ),
    (
        "device-kwarg-list",
        lambda: translate.add_device("1", _dev(tags=["a"]), limits=STRICT),
        [("device.tags", "type")],
    ),
    (
        "device-attribute-object",
        lambda: translate.add_device("1", _dev(attributes={"os": {}})),
        [("device.attributes.os", "type")],
    ),
    (
        "device-attributes-list",
        lambda: translate.add_device("1", _dev(attributes=[])),
        [("device.attributes", "type")],
    ),
    (
        "device-v2-token",
        lambda: translate.add_device("1", _dev(token="t"), limits=STRICT),
        [("device.token", "unknown_field")],
    ),
    (
        "delete-device-empty",
        lambda: translate.delete_device("1", "", limits=STRICT),
        [("device_id", "required")],
    ),
    (
        "merge-primary-too-long",
        lambda: translate.merge({"primary": {"email": "a" * 151}, "secondary": {"id": "2"}}),
        [("primary.email", "max_bytes")],
    ),
    (
        "merge-secondary-missing",
        lambda: translate.merge({"primary": {"id": "1"}}),
        [("secondary", "required")],
    ),
    (
        "merge-extra-key",
        lambda: translate.merge(
            {"primary": {"id": "1"}, "secondary": {"id": "2"}, "x": 1}, limits=STRICT
        ),
        [("x", "unknown_field")],
    ),
    (
        "push-missing-everything",
        lambda: delivery.push_event({}, limits=STRICT),
        [("delivery_id", "required"), ("device_id", "required"), ("event", "required")],
    ),
    (
        "push-event-clicked",
        lambda: delivery.push_event({"delivery_id": "d", "event": "clicked", "device_id": "t"}),
        [("event", "enum")],
    ),
    (
        "push-timestamp-string",
        lambda: delivery.push_event(
            {"delivery_id": "d", "event": "opened", "device_id": "t", "timestamp": "1"}
        ),
        [("timestamp", "seconds")],
    ),
    (
        "metric-push-without-delivery-id",
        lambda: delivery.metric({"metric": "opened", "recipient": APNS}),
        [("delivery_id", "required")],
    ),
    (
        "metric-v1-unknown",
        lambda: delivery.check_metric_v1({"delivery_id": "d", "metric": "bounce"}),
        [("metric", "enum")],
    ),
    (
        "metric-v1-delivery-id-number",
        lambda: delivery.check_metric_v1({"delivery_id": 5, "metric": "clicked"}),
        [("delivery_id", "type")],
    ),
    (
        "metric-v1-href-number",
        lambda: delivery.check_metric_v1({"delivery_id": "d", "metric": "clicked", "href": 1}),
        [("href", "type")],
    ),
    (
        "metric-v1-recipient-list",
        lambda: delivery.check_metric_v1({"delivery_id": "d", "metric": "opened", "recipient": []}),
        [("recipient", "type")],
    ),
    ("segment-ids-missing", lambda: translate.segment_ids({}), [("ids", "required")]),
    ("segment-ids-string", lambda: translate.segment_ids({"ids": "1"}), [("ids", "type")]),
    ("segment-ids-empty", lambda: translate.segment_ids({"ids": []}), [("ids", "min_items")]),
    ("segment-id-number", lambda: translate.segment_ids({"ids": ["1", 2]}), [("ids[1]", "type")]),
]


@pytest.mark.parametrize(
    ("call", "expected"), [(c, e) for _, c, e in ERRORS], ids=[n for n, _, _ in ERRORS]
)
def test_errors_name_the_v1_field(call: Call, expected: list[tuple[str, str]]) -> None:
    """Refusals name the field the producer sent, with the rule it broke."""
    assert fails(call) == sorted(expected)


def test_drop_in_takes_what_only_strictness_refuses() -> None:
    """Without strict_validation: unknown keys dropped, non-ULID ids and ms kept."""
    op = translate.track("1", {"name": "x", "id": "a-b", "attributes": {}, "timestamp": 2**41})
    assert (op["id"], op["timestamp"]) == ("a-b", 2**41) and "attributes" not in op
    device = translate.add_device("1", _dev(tags=["a"], token="t"))["device"]
    assert "tags" not in device.get("attributes", {}) and "token" not in device.get(
        "attributes", {}
    )
    assert translate.delete_device("1", "")["device"] == {"token": ""}
    merge = translate.merge({"primary": {"id": "1"}, "secondary": {"id": "2"}, "x": 1})
    assert "x" not in merge
    assert delivery.push_event({}) is None
    assert delivery.check_push_v1({"event": "opened", "x": 1}) == {"event": "opened"}


def test_metric_and_invite_forwarded_to_v1_pass_their_checks() -> None:
    """Well-formed v1-only metrics and invite events raise nothing."""
    delivery.check_metric_v1({"delivery_id": "d", "metric": "bounced", "reason": "full"})
    delivery.check_metric_v1({"delivery_id": "d", "metric": "delivered", "recipient": 15551234})
    translate.check_anonymous_v1({"name": "invite", "data": {"recipient": "a@b.co"}})


# (name, call(at_limit: bool), v1 field, limit)
LIMITS: list[tuple[str, Callable[[bool], object], str, int]] = [
    ("path-id-150", lambda ok: translate.delete(E2 * 75 + ("" if ok else "a")), "identifier", 150),
    (
        "attribute-name-150",
        lambda ok: translate.identify("1", {E3 * 50 + ("" if ok else "a"): 1}),
        E3 * 50 + "a",
        150,
    ),
    (
        "attribute-value-1000",
        lambda ok: translate.identify("1", {"bio": E4 * 250 + ("" if ok else "a")}),
        "bio",
        1000,
    ),
    (
        "attributes-300",
        lambda ok: translate.identify("1", {f"a{i}": E2 for i in range(300 if ok else 301)}),
        "body",
        300,
    ),
    (
        "event-name-100",
        lambda ok: translate.track("1", {"name": E2 * 50 + ("" if ok else "a")}),
        "name",
        100,
    ),
    (
        "event-data-100000",
        lambda ok: translate.track(
            "1", {"name": "x", "data": {"k": E4 * 24_998 + ("" if ok else "a")}}
        ),
        "data",
        100_000,
    ),
    (
        "invite-data-100000",
        lambda ok: translate.check_anonymous_v1(
            {"name": "x", "data": {"k": E4 * 24_998 + ("" if ok else "a")}}
        ),
        "data",
        100_000,
    ),
    (
        "segment-ids-1000",
        lambda ok: translate.segment_ids({"ids": [str(i) for i in range(1000 if ok else 1001)]}),
        "ids",
        1000,
    ),
]


@pytest.mark.parametrize(
    ("call", "field", "limit"),
    [(c, f, n) for _, c, f, n in LIMITS],
    ids=[name for name, _, _, _ in LIMITS],
)
def test_v1_limit_is_inclusive_and_named(
    call: Callable[[bool], object], field: str, limit: int
) -> None:
    """At the limit the call passes; one over is one error naming the v1 field and limit."""
    call(True)
    with pytest.raises(InvalidRequest) as caught:
        call(False)
    [error] = caught.value.errors
    assert (error.field, error.limit, error.actual) == (field, limit, limit + 1)
    assert str(limit) in error.message and error.message.startswith(field)


#: Keys with rules of their own: they are not plain string attributes.
SPECIAL = {"_timestamp", "cio_relationships", "_update"}
SMALL_ATTRS = st.dictionaries(
    st.text(max_size=12).filter(lambda k: k not in SPECIAL),
    st.text(max_size=40),
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(attrs=SMALL_ATTRS)
def test_identify_round_trips_small_attributes(attrs: dict[str, str]) -> None:
    """Any ≤300 small string attributes become an identify that validates and keeps them."""
    op = translate.identify("p1", dict(attrs))
    assert validate_op(op) == []
    assert op.get("attributes", {}) == attrs


EVENT_KINDS = [("person", "event"), ("person", "page"), ("person", "screen"), ("delivery", "event")]
OTHER_KINDS = [("person", "identify"), ("person", "merge"), ("object", "identify"), ("x", "y")]


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(EVENT_KINDS + OTHER_KINDS),
    existing=st.none() | st.text(max_size=30),
    extra=st.dictionaries(st.sampled_from(["name", "attributes", "timestamp"]), st.text()),
)
def test_ensure_event_id(
    kind: tuple[str, str], existing: str | None, extra: dict[str, str]
) -> None:
    """An existing id is never changed; an event without one gets a valid ULID; others untouched."""
    op: dict[str, Any] = {"type": kind[0], "action": kind[1], **extra}
    if existing is not None:
        op["id"] = existing
    before = dict(op)
    out = translate.ensure_event_id(op)
    assert op == before
    if existing is not None:
        assert out["id"] == existing
    elif kind in EVENT_KINDS:
        assert is_ulid(out["id"]) and {k: v for k, v in out.items() if k != "id"} == before
    else:
        assert out == before


def test_identify_with_delete_relationships_and_attributes_is_two_ops() -> None:
    """Drop-in: the identify, then the delete, as Customer.io does both; strict: refused."""
    rel = {"action": "delete_relationships", "relationships": [{"identifiers": OBJ}]}
    first, second = translate.identify_ops("1", {"plan": "pro", "cio_relationships": rel})
    assert (first["action"], first["attributes"]) == ("identify", {"plan": "pro"})
    assert (second["action"], second["cio_relationships"]) == (
        "delete_relationships",
        [{"identifiers": OBJ}],
    )
    with pytest.raises(InvalidRequest):
        translate.identify_ops("1", {"plan": "pro", "cio_relationships": rel}, limits=STRICT)
