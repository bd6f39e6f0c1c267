"""Packing one shard's head: batches by exact bytes, in order, oversize ops never sent.

A drain packs with `pack_heads`; a shard alone is one head. Oversize ops are cut out of
the body (the drain sends them alone as an oversize report) and end their batch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.delivery.across_shards import ShardHead, pack_heads
from service.delivery.packing import ENVELOPE_BYTES, batch_body, batch_size_bytes


@dataclass(frozen=True)
class Batch:
    """Ops ``start``..``stop-1`` of the input, as one request body."""

    start: int
    stop: int
    body: bytes

    @property
    def count(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Oversize:
    index: int


Unit = Batch | Oversize


def first_batch(ops: list[bytes], *, max_batch_bytes: int, max_op_bytes: int) -> Batch:
    """What a drain of one shard packs from `ops`: the longest batch from the head."""
    head = ShardHead(0, ops, [(n, 0) for n in range(len(ops))], cap=len(ops))
    packed = pack_heads([head], max_batch_bytes=max_batch_bytes, max_op_bytes=max_op_bytes)
    assert packed.sources == tuple((0, n) for n in range(packed.count))  # a prefix, in order
    return Batch(0, packed.count, packed.body)


def pack(ops: list[bytes], *, max_batch_bytes: int, max_op_bytes: int) -> list[Unit]:
    """Every unit a drain sends for `ops`, in order, as it resolves its stream's head."""
    units: list[Unit] = []
    start = 0
    while start < len(ops):
        if len(ops[start]) > max_op_bytes:
            units.append(Oversize(start))
            start += 1
            continue
        batch = first_batch(ops[start:], max_batch_bytes=max_batch_bytes, max_op_bytes=max_op_bytes)
        units.append(Batch(start, start + batch.stop, batch.body))
        start += batch.stop
    return units


def op(size: int) -> bytes:
    """A JSON op of exactly `size` bytes."""
    base = b'{"a":""}'
    assert size >= len(base)
    return b'{"a":"' + b"x" * (size - len(base)) + b'"}'


@pytest.mark.parametrize(
    ("sizes", "max_batch", "max_op", "expected"),
    [
        ([], 100, 50, []),
        ([10], 100, 50, [(0, 1)]),
        ([10, 10], 12 + 10 + 1 + 10, 50, [(0, 2)]),
        ([10, 10], 12 + 10 + 1 + 10 - 1, 50, [(0, 1), (1, 2)]),
        ([40, 40, 40], 100, 50, [(0, 2), (2, 3)]),
        ([10, 60, 10], 100, 50, [(0, 1), "x1", (2, 3)]),
        ([60], 100, 50, ["x0"]),
        ([50, 50], 12 + 50, 50, [(0, 1), (1, 2)]),
    ],
    ids=[
        "empty",
        "one",
        "exact-fit",
        "one-byte-over",
        "split",
        "oversize-in-middle",
        "oversize-alone",
        "each-at-limit",
    ],
)
def test_pack_table(sizes: list[int], max_batch: int, max_op: int, expected: list[object]) -> None:
    """Each case splits where the byte arithmetic says it must."""
    ops = [op(s) for s in sizes]
    units = pack(ops, max_batch_bytes=max_batch, max_op_bytes=max_op)
    got: list[object] = [
        (u.start, u.stop) if isinstance(u, Batch) else f"x{u.index}" for u in units
    ]
    assert got == expected


def test_body_is_valid_json_and_size_matches() -> None:
    """The body is the exact JSON sent: the envelope, the ops and a comma between each two."""
    ops = [orjson.dumps({"type": "person", "n": i}) for i in range(5)]
    body = batch_body(ops)
    assert orjson.loads(body) == {"batch": [orjson.loads(o) for o in ops]}
    assert len(body) == ENVELOPE_BYTES + sum(len(o) for o in ops) + len(ops) - 1
    assert len(batch_body([])) == ENVELOPE_BYTES


def test_a_head_packs_its_longest_prefix_and_stops_before_an_oversize_op() -> None:
    ops = [op(40), op(40), op(40)]
    assert first_batch(ops, max_batch_bytes=100, max_op_bytes=50).stop == 2
    assert first_batch([op(10), op(60)], max_batch_bytes=100, max_op_bytes=50).stop == 1
    assert first_batch([], max_batch_bytes=100, max_op_bytes=50).stop == 0


def test_size_arithmetic_matches_the_body() -> None:
    for sizes in ([], [10], [10, 20, 30]):
        assert batch_size_bytes(sizes) == len(batch_body([op(n) for n in sizes]))


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=8, max_value=400), max_size=60),
    max_batch=st.integers(min_value=300, max_value=3000),
    max_op=st.integers(min_value=8, max_value=288),
)
def test_pack_properties(sizes: list[int], max_batch: int, max_op: int) -> None:
    """No batch over the limit, every op in exactly one unit, order kept, oversize never sent."""
    ops = [op(s) for s in sizes]
    units = pack(ops, max_batch_bytes=max_batch, max_op_bytes=max_op)
    seen: list[int] = []
    for unit in units:
        if isinstance(unit, Oversize):
            assert len(ops[unit.index]) > max_op
            seen.append(unit.index)
            continue
        assert unit.count >= 1
        assert len(unit.body) <= max_batch
        assert unit.body == batch_body(ops[unit.start : unit.stop])
        assert all(len(o) <= max_op for o in ops[unit.start : unit.stop])
        seen.extend(range(unit.start, unit.stop))
    assert seen == list(range(len(ops)))
    # Batches are maximal: the next op would not have fitted.
    for unit, nxt in itertools.pairwise(units):
        if isinstance(unit, Batch) and isinstance(nxt, Batch):
            assert len(unit.body) + 1 + len(ops[nxt.start]) > max_batch
