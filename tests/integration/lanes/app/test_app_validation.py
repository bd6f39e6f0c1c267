"""App API bad input: one row per rule, each naming the field; and nothing queued over HTTP."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from service import keys
from service.api.app import create_app
from service.config import Settings
from service.jobs import Lane
from service.lanes.app.validation import validate_send, validate_trigger
from tests.support.http_server import serve_in_thread
from tests.support.triggers import RecordingTriggers

NOW = 1_800_000_000
ID = {"id": "p1"}
EMAIL = {"transactional_message_id": 1, "to": "a@example.com", "identifiers": ID}
PUSH = {"transactional_message_id": 2, "identifiers": ID}
SMS = {"transactional_message_id": 3, "identifiers": ID, "to": "+15555550100"}


def b64(size: int) -> str:
    return base64.b64encode(b"x" * size).decode()


SEND_CASES: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("email", "no identifiers", {**EMAIL, "identifiers": None}, "identifiers", "required"),
    (
        "email",
        "two identifiers",
        {**EMAIL, "identifiers": {"id": 1, "email": "a@b.c"}},
        "identifiers",
        "exactly_one",
    ),
    ("email", "no identifier", {**EMAIL, "identifiers": {}}, "identifiers", "exactly_one"),
    (
        "email",
        "unknown identifier",
        {**EMAIL, "identifiers": {"phone": "1"}},
        "identifiers.phone",
        "one_of",
    ),
    ("email", "identifiers not object", {**EMAIL, "identifiers": "p1"}, "identifiers", "type"),
    ("email", "empty id", {**EMAIL, "identifiers": {"id": ""}}, "identifiers.id", "type"),
    (
        "email",
        "bad email identifier",
        {**EMAIL, "identifiers": {"email": "nope"}},
        "identifiers.email",
        "email",
    ),
    ("email", "no to", {"transactional_message_id": 1, "identifiers": ID}, "to", "required"),
    ("email", "to not string", {**EMAIL, "to": 5}, "to", "type"),
    ("email", "to not an address", {**EMAIL, "to": "nobody"}, "to", "email"),
    (
        "email",
        "16 recipients",
        {
            **EMAIL,
            "to": ",".join(f"u{i}@x.io" for i in range(10)),
            "cc": ",".join(f"c{i}@x.io" for i in range(6)),
        },
        "to",
        "max_recipients",
    ),
    ("email", "bcc not string", {**EMAIL, "bcc": ["a@b.c"]}, "bcc", "type"),
    ("email", "no template, no content", {"to": "a@b.c", "identifiers": ID}, "body", "required"),
    (
        "email",
        "no template, no subject",
        {"to": "a@b.c", "identifiers": ID, "body": "<p>", "from": "x@y.z"},
        "subject",
        "required",
    ),
    (
        "email",
        "template id bool",
        {**EMAIL, "transactional_message_id": True},
        "transactional_message_id",
        "type",
    ),
    (
        "email",
        "attachment not base64",
        {**EMAIL, "attachments": {"a.pdf": "***"}},
        "attachments.a.pdf",
        "base64",
    ),
    (
        "email",
        "attachments over 2 MB",
        {**EMAIL, "attachments": {"a": b64(1_500_000), "b": b64(600_000)}},
        "attachments",
        "max_bytes",
    ),
    ("email", "attachments not object", {**EMAIL, "attachments": ["a"]}, "attachments", "type"),
    (
        "email",
        "payload over 1 MB",
        {**EMAIL, "message_data": {"x": "y" * 1_000_001}},
        "body",
        "max_bytes",
    ),
    (
        "email",
        "send_at over 90 days",
        {**EMAIL, "send_at": NOW + 91 * 86_400},
        "send_at",
        "max_ahead",
    ),
    ("email", "send_at not seconds", {**EMAIL, "send_at": "tomorrow"}, "send_at", "type"),
    ("email", "message_data not object", {**EMAIL, "message_data": [1]}, "message_data", "type"),
    ("email", "tracked not bool", {**EMAIL, "tracked": "yes"}, "tracked", "type"),
    ("push", "no template", {"identifiers": ID}, "transactional_message_id", "required"),
    ("push", "to empty", {**PUSH, "to": ""}, "to", "type"),
    ("push", "to blank", {**PUSH, "to": " \n"}, "to", "type"),
    ("push", "custom_device not object", {**PUSH, "custom_device": "tok"}, "custom_device", "type"),
    ("sms", "no to", {**SMS, "to": None}, "to", "required"),
    ("sms", "to not E.164", {**SMS, "to": "555-0100"}, "to", "e164"),
    ("whatsapp", "to not E.164", {**SMS, "to": "0049 30"}, "to", "e164"),
    ("in_app", "to given", {**PUSH, "to": "x"}, "to", "not_allowed"),
    ("inbox_message", "no identifiers", {"transactional_message_id": 1}, "identifiers", "required"),
    ("sms", "body not object", [], "body", "type"),  # type: ignore[list-item]
]


#: cioq's opt-in rules (docs/validation-rules.md "Opt-in strictness"), by (kind, field, rule).
STRICT_SEND_RULES = {
    ("email", "identifiers", "required"),
    ("email", "identifiers.phone", "one_of"),
    ("email", "identifiers.email", "email"),
    ("email", "to", "email"),
    ("email", "body", "required"),
    ("email", "subject", "required"),
    ("email", "from", "required"),
    ("in_app", "to", "not_allowed"),
}
#: Cases whose rule also refuses another value in both modes: opt-in by the case itself.
STRICT_SEND_CASES = {("push", "to blank")}
STRICT_TRIGGER_RULES = {("emails[0]", "email"), ("data_file_url", "url")}


@pytest.mark.parametrize(
    ("kind", "name", "body", "field", "rule"),
    [pytest.param(k, name, b, f, r, id=f"{k}: {name}") for k, name, b, f, r in SEND_CASES],
)
def test_send_rule(kind: str, name: str, body: Any, field: str, rule: str) -> None:
    body = {k: v for k, v in body.items() if v is not None} if isinstance(body, dict) else body
    strict = (kind, field, rule) in STRICT_SEND_RULES or (kind, name) in STRICT_SEND_CASES
    errors = validate_send(kind, body, now_s=NOW, strict=strict)
    assert (field, rule) in [(e.field, e.rule) for e in errors], errors
    if strict:  # a drop-in workspace forwards it: Customer.io states no such refusal
        assert (field, rule) not in [
            (e.field, e.rule) for e in validate_send(kind, body, now_s=NOW)
        ]


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("email", EMAIL),
        ("email", {**EMAIL, "to": "Jane <jane@x.io>, b@x.io", "attachments": {"a": b64(10)}}),
        (
            "email",
            {
                "to": "{{customer.email}}",
                "identifiers": {"cio_id": "c1"},
                "body": "b",
                "subject": "s",
                "from": "f@x.io",
            },
        ),
        ("email", {**EMAIL, "send_at": NOW + 89 * 86_400, "transactional_message_id": "welcome"}),
        ("push", PUSH),
        ("push", {**PUSH, "to": "last_used", "custom_device": {"token": "t", "platform": "ios"}}),
        ("sms", SMS),
        ("sms", {**SMS, "to": "{{customer.phone}}"}),
        ("whatsapp", SMS),
        ("in_app", PUSH),
        ("inbox_message", PUSH),
    ],
)
def test_valid_sends_pass(kind: str, body: dict[str, Any]) -> None:
    assert validate_send(kind, body, now_s=NOW) == []


TRIGGER_CASES: list[tuple[str, Any, str, str]] = [
    ("data not object", {"data": [1]}, "data", "type"),
    ("data over 50,000 bytes", {"data": {"x": "y" * 50_000}}, "data", "max_bytes"),
    ("two recipient kinds", {"ids": [1], "emails": ["a@b.c"]}, "emails", "one_of"),
    ("ids over 10,000", {"ids": list(range(1, 10_002))}, "ids", "max_items"),
    ("ids bad item", {"ids": [None]}, "ids[0]", "type"),
    ("emails bad item", {"emails": ["nope"]}, "emails[0]", "email"),
    (
        "per_user_data both ids",
        {"per_user_data": [{"id": 1, "email": "a@b.c"}]},
        "per_user_data[0]",
        "exactly_one",
    ),
    (
        "per_user_data over 10,000",
        {"per_user_data": [{"id": i} for i in range(10_001)]},
        "per_user_data",
        "max_items",
    ),
    (
        "per_user_data data",
        {"per_user_data": [{"id": 1, "data": 3}]},
        "per_user_data[0].data",
        "type",
    ),
    ("data_file_url", {"data_file_url": "ftp://x"}, "data_file_url", "url"),
    ("recipients not object", {"recipients": []}, "recipients", "type"),
    ("flag not bool", {"ids": [1], "id_ignore_missing": 1}, "id_ignore_missing", "type"),
    ("body not object", [1], "body", "type"),
]


@pytest.mark.parametrize(
    ("body", "field", "rule"), [pytest.param(b, f, r, id=n) for n, b, f, r in TRIGGER_CASES]
)
def test_trigger_rule(body: Any, field: str, rule: str) -> None:
    strict = (field, rule) in STRICT_TRIGGER_RULES
    assert (field, rule) in [(e.field, e.rule) for e in validate_trigger(body, strict=strict)]
    if strict:
        assert (field, rule) not in [(e.field, e.rule) for e in validate_trigger(body)]


def test_valid_triggers_pass() -> None:
    for body in (
        None,
        {},
        {"data": {"a": 1}, "ids": ["1", 2]},
        {"per_user_data": [{"email": "a@b.c", "data": {}}]},
    ):
        assert validate_trigger(body) == []


# Over HTTP: the 400 names the field, and nothing reaches a stream.


@pytest.fixture
def api(
    make_settings: Callable[..., Settings], triggers: RecordingTriggers
) -> Iterator[httpx.Client]:
    app = create_app(make_settings(app_api_key="app-key"), triggers=triggers)
    headers = {"Authorization": "Bearer dev-ingest-key"}
    with serve_in_thread(app) as url, httpx.Client(base_url=url, headers=headers, timeout=10) as c:
        yield c


def nothing_queued(client: redis.Redis) -> bool:
    return not any(
        client.exists(keys.shard_keys("default", shard, lane).stream)
        for shard in range(4)
        for lane in Lane
    )


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/send/email", {**EMAIL, "identifiers": {}}, "identifiers"),
        ("/v1/send/sms", {**SMS, "to": "12"}, "to"),
        ("/v1/send/push", {"identifiers": ID}, "transactional_message_id"),
        ("/v1/campaigns/0/triggers", {}, "broadcast_id"),
        ("/v1/campaigns/abc/triggers", {}, "broadcast_id"),
        ("/v1/campaigns/5/triggers", {"data": 1}, "data"),
        ("/v1/send/broadcast", {"data": {}}, "id"),
        ("/v1/send/broadcast", {"id": "x"}, "id"),
    ],
)
def test_refused_over_http_names_the_field_and_queues_nothing(
    api: httpx.Client, redis_client: redis.Redis, path: str, body: Any, field: str
) -> None:
    answer = api.post(path, json=body)
    assert answer.status_code == 400
    assert field in [e["field"] for e in answer.json()["errors"]]
    assert answer.json()["meta"]["error"]
    assert nothing_queued(redis_client)


def test_not_json_is_400(api: httpx.Client, redis_client: redis.Redis) -> None:
    answer = api.post("/v1/send/email", content=b"{nope")
    assert answer.status_code == 400 and answer.json()["errors"][0]["field"] == "body"
    assert nothing_queued(redis_client)


def test_workspace_without_app_key_refuses_with_403(
    make_settings: Callable[..., Settings], triggers: RecordingTriggers, redis_client: redis.Redis
) -> None:
    app = create_app(make_settings(), triggers=triggers)
    with serve_in_thread(app) as url:
        answer = httpx.post(
            f"{url}/v1/send/email", json=EMAIL, headers={"Authorization": "Bearer dev-ingest-key"}
        )
        read = httpx.get(f"{url}/v1/segments", headers={"Authorization": "Bearer dev-ingest-key"})
    assert answer.status_code == 403 and answer.json()["errors"][0]["rule"] == "lane_disabled"
    assert read.status_code == 403
    assert nothing_queued(redis_client)


def test_time_is_read_per_call() -> None:
    """send_at is checked against the clock at validation time, not a fixed one."""
    assert validate_send("email", {**EMAIL, "send_at": int(time.time()) + 89 * 86_400}) == []


@pytest.mark.parametrize(("strict", "status"), [(False, 202), (True, 400)])
def test_a_workspaces_strict_validation_applies_its_opt_in_rules_over_http(
    make_settings: Callable[..., Settings],
    triggers: RecordingTriggers,
    strict: bool,
    status: int,
) -> None:
    """`to` that is no email address: Customer.io states no such refusal, so a drop-in
    workspace forwards it; a strict one refuses it naming the field."""
    settings = make_settings(app_api_key="app-key", strict_validation=strict)
    headers = {"Authorization": "Bearer dev-ingest-key", "Prefer": "respond-async"}
    with (
        serve_in_thread(create_app(settings, triggers=triggers)) as url,
        httpx.Client(base_url=url, headers=headers, timeout=10) as api,
    ):
        answer = api.post("/v1/send/email", json={**EMAIL, "to": "not an address"})
    assert answer.status_code == status, answer.text
    if strict:
        assert ("to", "email") in [(e["field"], e["rule"]) for e in answer.json()["errors"]]
