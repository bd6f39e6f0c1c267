"""Packing: serialized v2 operations into ``{"batch":[...]}`` request bodies.

Sizes are measured on the exact bytes that are sent, envelope included, before an op is
added; ops are never re-serialized. Order is kept: a batch is always a run of
consecutive ops, so the ops of one person leave in the order they were accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BATCH_HEAD = b'{"batch":['
BATCH_TAIL = b"]}"
#: Bytes of an empty batch body: ``{"batch":[]}``.
ENVELOPE_BYTES = len(BATCH_HEAD) + len(BATCH_TAIL)


@dataclass(frozen=True, slots=True)
class Batch:
    """Ops ``start``..``stop-1`` of the input, as one request body."""

    start: int
    stop: int
    body: bytes

    @property
    def count(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True, slots=True)
class Oversize:
    """Op ``index`` is larger than the per-op limit: it is reported, never sent."""

    index: int
    size_bytes: int


Unit = Batch | Oversize


def batch_body(ops: Sequence[bytes]) -> bytes:
    """The request body that carries `ops`, byte for byte."""
    return BATCH_HEAD + b",".join(ops) + BATCH_TAIL


def batch_size_bytes(op_sizes: Sequence[int]) -> int:
    """The size of the body that would carry ops of these sizes."""
    return ENVELOPE_BYTES + sum(op_sizes) + max(len(op_sizes) - 1, 0)


def _batch_stop(ops: Sequence[bytes], start: int, max_batch_bytes: int, max_op_bytes: int) -> int:
    """End of the longest batch from `start`: it stops before an overflow or an oversize op."""
    stop = start
    size = ENVELOPE_BYTES
    for op in ops[start:]:
        if len(op) > max_op_bytes:
            break
        added = len(op) + (1 if stop > start else 0)
        if size + added > max_batch_bytes:
            break
        size += added
        stop += 1
    return stop


def first_unit(ops: Sequence[bytes], *, max_batch_bytes: int, max_op_bytes: int) -> Unit | None:
    """The unit a drain sends next: the head op if oversize, else the longest batch."""
    if not ops:
        return None
    if len(ops[0]) > max_op_bytes:
        return Oversize(0, len(ops[0]))
    stop = _batch_stop(ops, 0, max_batch_bytes, max_op_bytes)
    return Batch(0, stop, batch_body(ops[:stop]))
