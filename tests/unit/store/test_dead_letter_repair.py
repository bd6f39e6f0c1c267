"""Repair rules without Redis: bulk field rules, the diff, and checking a fix as ingest."""

from __future__ import annotations

from typing import Any

import pytest

from service.errors import InvalidRequest
from service.jobs import dumps
from service.lanes import registry  # noqa: F401  (registers every lane's job kinds)
from service.store.dead_letter_repair import FieldRule, changes, fixed_payload
from service.store.dead_letters import DeadLetter, StoredDeadLetter

CALL = {
    "type": "identify",
    "userId": "u1",
    "traits": {"plan": "pro", "bad": 1},
    "messageId": "m-1",
    "timestamp": "2026-12-01T10:00:00.000Z",
}


def _stored(kind: str, payload: dict[str, Any]) -> StoredDeadLetter:
    letter = DeadLetter(kind, dumps(payload), "default:0:1-0", "invalid", "invalid", 400)
    return StoredDeadLetter("1-0", letter)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (FieldRule.parse("drop", "traits.bad"), {**CALL, "traits": {"plan": "pro"}}),
        (
            FieldRule.parse("rename", "traits.bad", "good"),
            {**CALL, "traits": {"plan": "pro", "good": 1}},
        ),
        (FieldRule.parse("drop", "traits.none"), None),  # no such field: not a match
        (FieldRule.parse("drop", "userId.x"), None),  # a leaf has no fields
        (FieldRule.parse("rename", "traits.bad", "plan"), None),  # would overwrite a field
    ],
)
def test_a_field_rule_drops_or_renames_one_field_or_does_not_match(
    rule: FieldRule, expected: dict[str, Any] | None
) -> None:
    assert rule.apply(CALL) == expected
    assert CALL["traits"] == {"plan": "pro", "bad": 1}  # the letter's own is untouched


@pytest.mark.parametrize(
    ("action", "field", "to", "named"),
    [
        ("move", "a", None, "action"),
        ("drop", "", None, "field"),
        ("drop", "a..b", None, "field"),
        ("rename", "a", None, "to"),
        ("rename", "a", "b.c", "to"),
        ("drop", "a", "b", "to"),
    ],
)
def test_a_bad_rule_names_its_field(action: str, field: str, to: str | None, named: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        FieldRule.parse(action, field, to)
    assert info.value.errors[0].field == named


def test_the_diff_names_each_dropped_added_and_changed_leaf() -> None:
    before = {"a": 1, "t": {"x": "old", "gone": True}}
    after = {"a": 1, "t": {"x": "new"}, "n": [1]}
    assert changes(before, after) == ["+n: [1]", "-t.gone: true", '~t.x: "old" -> "new"']
    assert changes(before, before) == []


@pytest.mark.parametrize(
    ("fix", "field", "rule"),
    [
        ({**CALL, "userId": {"not": "an id"}}, "userId", "type"),
        ({**CALL, "type": "shout"}, "type", "one_of"),
        ({**CALL, "messageId": "m-2"}, "messageId", "kept"),
        ({**CALL, "timestamp": "2027-01-01T00:00:00.000Z"}, "timestamp", "kept"),
        ([1, 2], "payload", "type"),
    ],
)
def test_a_fix_that_breaks_an_ingest_rule_is_refused_naming_it(
    fix: Any, field: str, rule: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        fixed_payload(_stored("cdp", CALL), fix, strict=False)
    assert info.value.status == 422
    assert (field, rule) in [(e.field, e.rule) for e in info.value.errors]


def test_a_fix_that_leaves_out_the_ids_and_accept_time_gets_the_letters_back() -> None:
    fix = {"type": "identify", "userId": "u1", "traits": {"plan": "pro"}}
    fixed = fixed_payload(_stored("cdp", CALL), fix, strict=True)
    assert fixed == dumps({**fix, "messageId": "m-1", "timestamp": CALL["timestamp"]})


def test_a_loose_workspace_stores_a_track_fix_as_ingest_would_and_a_strict_one_refuses() -> None:
    op = {"type": "person", "action": "identify", "identifiers": {"id": "p"}, "timestamp": 5}
    fix = {**op, "colour": "red"}
    assert fixed_payload(_stored("v2", op), fix, strict=False) == dumps(op)
    with pytest.raises(InvalidRequest) as info:
        fixed_payload(_stored("v2", op), fix, strict=True)
    assert [e.field for e in info.value.errors] == ["colour"]


def test_an_app_send_is_checked_by_its_body_and_keeps_its_envelope() -> None:
    envelope: dict[str, Any] = {
        "id": "j-1",
        "method": "POST",
        "path": "/v1/send/sms",
        "body": {"identifiers": {"id": "p"}, "transactional_message_id": 3, "to": "nope"},
        "limit": "send",
        "bucket": "",
        "route": "send:j-1",
        "op_type": "send_sms",
    }
    with pytest.raises(InvalidRequest) as info:
        fixed_payload(_stored("app", envelope), envelope, strict=False)
    assert ("body.to", "e164") in [(e.field, e.rule) for e in info.value.errors]
    good = {**envelope, "body": {**envelope["body"], "to": "+15555550100"}}
    assert fixed_payload(_stored("app", envelope), good, strict=False) == dumps(good)
    moved = {**good, "path": "/v1/send/email"}
    with pytest.raises(InvalidRequest) as info:
        fixed_payload(_stored("app", envelope), moved, strict=False)
    assert [(e.field, e.rule) for e in info.value.errors] == [("path", "kept")]


def test_a_kind_without_repair_rules_is_refused() -> None:
    v1 = {"method": "POST", "path": "/api/v1/x", "body": {}, "route": "r", "op_type": "x"}
    with pytest.raises(InvalidRequest) as info:
        fixed_payload(_stored("v1", v1), v1, strict=False)
    assert (info.value.errors[0].rule, info.value.status) == ("repair_unsupported", 422)
