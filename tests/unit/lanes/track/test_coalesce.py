"""Coalescing of identifies: table tests, and a replay model proving Customer.io ends the same."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from service.delivery.outcomes import ItemError, Outcome, OutcomeClass
from service.lanes.track.coalesce import (
    coalesce_batch,
    coalesce_ops,
    expand_item_errors,
    merge_pair,
)
from tests.support.customerio_model import PEOPLE, replay


def ident(person: str, attrs: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"type": "person", "action": "identify", "identifiers": {"id": person}}
    if attrs is not None:
        op["attributes"] = attrs
    op.update(extra)
    return op


def event(person: str, name: str = "e") -> dict[str, Any]:
    return {"type": "person", "action": "event", "identifiers": {"id": person}, "name": name}


A1, A2 = ident("a", {"x": 1, "y": 1}), ident("a", {"x": 2})
B1 = ident("b", {"x": 9})
BY_EMAIL = {**A2, "identifiers": {"email": "a"}}
OBJ = {
    "type": "object",
    "action": "identify",
    "identifiers": {"object_type_id": "1", "object_id": "o"},
    "cio_relationships": [{"identifiers": {"id": "a"}}],
}
MERGE_INTO_B = {
    "type": "person",
    "action": "merge",
    "primary": {"id": "b"},
    "secondary": {"id": "a"},
}

# (case, input ops, expected output ops, expected origin)
TABLE: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]], list[int]]] = [
    ("later values win", [A1, A2], [ident("a", {"x": 2, "y": 1})], [0, 0]),
    ("other people between", [A1, B1, A2], [ident("a", {"x": 2, "y": 1}), B1], [0, 1, 0]),
    ("event of the person between", [A1, event("a"), A2], [A1, event("a"), A2], [0, 1, 2]),
    (
        "event of another person",
        [A1, event("b"), A2],
        [ident("a", {"x": 2, "y": 1}), event("b")],
        [0, 1, 0],
    ),
    (
        "null removes, still later wins",
        [A1, ident("a", {"y": None})],
        [ident("a", {"x": 1, "y": None})],
        [0, 0],
    ),
    (
        "equal timestamps kept",
        [ident("a", {"x": 1}, timestamp=5), ident("a", {"z": 2}, timestamp=5)],
        [ident("a", {"x": 1, "z": 2}, timestamp=5)],
        [0, 0],
    ),
    (
        "different timestamps not merged",
        [ident("a", {"x": 1}, timestamp=5), ident("a", {"x": 2}, timestamp=6)],
        [ident("a", {"x": 1}, timestamp=5), ident("a", {"x": 2}, timestamp=6)],
        [0, 1],
    ),
    (
        "_update differs",
        [A1, ident("a", {"x": 2, "_update": True})],
        [A1, ident("a", {"x": 2, "_update": True})],
        [0, 1],
    ),
    (
        "nested object set twice",
        [ident("a", {"p": {"t": 1}}), ident("a", {"p": {"u": 1}})],
        [ident("a", {"p": {"t": 1}}), ident("a", {"p": {"u": 1}})],
        [0, 1],
    ),
    (
        "relationships are not merged",
        [A1, ident("a", {"x": 2}, cio_relationships=[])],
        [A1, ident("a", {"x": 2}, cio_relationships=[])],
        [0, 1],
    ),
    (
        "merge naming the person as secondary",
        [A1, MERGE_INTO_B, A2],
        [A1, MERGE_INTO_B, A2],
        [0, 1, 2],
    ),
    ("object relationship naming the person", [A1, OBJ, A2], [A1, OBJ, A2], [0, 1, 2]),
    ("different identifier keys", [A1, BY_EMAIL], [A1, BY_EMAIL], [0, 1]),
    (
        "three in a row",
        [A1, A2, ident("a", {"z": 3})],
        [ident("a", {"x": 2, "y": 1, "z": 3})],
        [0, 0, 0],
    ),
    (
        "identify without attributes",
        [ident("a"), ident("a", {"x": 1})],
        [ident("a", {"x": 1})],
        [0, 0],
    ),
]


@pytest.mark.parametrize(("case", "ops", "expected", "origin"), TABLE, ids=[t[0] for t in TABLE])
def test_coalesce_table(
    case: str, ops: list[dict[str, Any]], expected: list[dict[str, Any]], origin: list[int]
) -> None:
    before = copy.deepcopy(ops)
    out, got_origin = coalesce_ops(ops)
    assert got_origin == origin, case
    assert out == expected, case
    assert ops == before, "inputs are never mutated"


def test_merge_pair_refuses_other_people() -> None:
    assert merge_pair(A1, B1) is None
    assert merge_pair(event("a"), A2) is None


def test_batch_keeps_unmerged_bytes_exactly() -> None:
    # Unusual spacing proves the bytes of unmerged ops are the stored ones, not re-serialized.
    raw_event = b'{"type":"person","action":"event","identifiers":{"id":"b"},  "name":"e"}'
    ops = [orjson.dumps(A1), raw_event, orjson.dumps(A2)]
    result = coalesce_batch(ops, max_op_bytes=32_768)
    assert result.ops == [orjson.dumps(ident("a", {"x": 2, "y": 1})), raw_event]
    assert result.origin == (0, 1, 0)
    assert result.saved == 1


def test_batch_without_two_identifies_is_untouched() -> None:
    ops = [orjson.dumps(A1), orjson.dumps(event("a"))]
    result = coalesce_batch(ops, max_op_bytes=32_768)
    assert result.ops == ops and result.origin == (0, 1) and result.saved == 0


def test_merged_op_respects_the_op_limit() -> None:
    big = "v" * 300
    ops = [orjson.dumps(ident("a", {f"k{i}": big})) for i in range(4)]
    limit = len(ops[0]) * 2 + 20  # two fit in one merged op, three do not
    result = coalesce_batch(ops, max_op_bytes=limit)
    assert all(len(op) <= limit for op in result.ops)
    assert result.origin == (0, 0, 1, 1)
    merged = [orjson.loads(op)["attributes"] for op in result.ops]
    assert merged == [{"k0": big, "k1": big}, {"k2": big, "k3": big}]


def test_item_errors_are_charged_to_every_carried_op() -> None:
    err = ItemError(batch_index=0, reason="invalid", field="attributes.x", message="bad")
    outcome = Outcome(OutcomeClass.PARTIAL, 207, item_errors=(err,))
    expanded = expand_item_errors(outcome, (0, 1, 0))
    assert [e.batch_index for e in expanded.item_errors] == [0, 2]
    success = Outcome(OutcomeClass.SUCCESS, 200)
    assert expand_item_errors(success, (0, 0)) is success


# --- A model of Customer.io's person state, replayed over original and coalesced streams ---

identifiers = st.builds(
    lambda k, v: {k: v}, st.sampled_from(["id", "email"]), st.sampled_from(PEOPLE)
)
values = st.one_of(
    st.integers(0, 3), st.none(), st.just(""), st.dictionaries(st.sampled_from("tu"), st.booleans())
)
attributes = st.dictionaries(st.sampled_from(["x", "y", "_update"]), values, max_size=3).map(
    lambda a: {**a, "_update": True} if "_update" in a else a
)


@st.composite
def operations(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(["identify"] * 5 + ["event", "delete", "suppress", "merge", "object"])
    )
    if kind == "identify":
        op: dict[str, Any] = {
            "type": "person",
            "action": "identify",
            "identifiers": draw(identifiers),
        }
        if draw(st.booleans()):
            op["attributes"] = draw(attributes)
        stamp = draw(st.sampled_from([None, None, 100, 200]))
        if stamp is not None:
            op["timestamp"] = stamp
        return op
    if kind == "merge":
        return {
            "type": "person",
            "action": "merge",
            "primary": draw(identifiers),
            "secondary": draw(identifiers),
        }
    if kind == "object":
        return {
            "type": "object",
            "action": "identify",
            "identifiers": {"object_type_id": "1", "object_id": "o"},
            "cio_relationships": [{"identifiers": draw(identifiers)}],
        }
    return {"type": "person", "action": kind, "identifiers": draw(identifiers), "name": "e"}


@settings(max_examples=600, deadline=None)
@given(st.lists(operations(), max_size=30))
@example([ident("1", {"x": 1}, timestamp=200), ident("1", {"x": 2}, timestamp=100)])
@example([ident("1", {"p": {"t": True}}), ident("1", {"p": {"u": True}})])
def test_coalesced_stream_leaves_customerio_in_the_same_state(ops: list[dict[str, Any]]) -> None:
    merged, origin = coalesce_ops(ops)
    assert replay(merged) == replay(ops)
    assert len(origin) == len(ops)
    assert sorted(set(origin)) == list(range(len(merged)))


@settings(max_examples=200, deadline=None)
@given(st.lists(operations(), max_size=30))
def test_batch_bytes_replay_the_same(ops: list[dict[str, Any]]) -> None:
    result = coalesce_batch([orjson.dumps(op) for op in ops], max_op_bytes=32_768)
    assert replay([orjson.loads(op) for op in result.ops]) == replay(ops)
    assert result.saved == len(ops) - len(result.ops)
