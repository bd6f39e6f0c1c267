"""Packing across shards: one request body from the heads of several shards.

Under live traffic each shard holds only a few ops, so packing shard by shard sends
one small request per shard per linger window. `pack_heads` fills one body from the
heads of every ready shard of a workspace (and lane) instead, up to the byte limit.

What it keeps, whatever the input (``tests/unit/lanes/track/test_packing_across_shards.py``):

* every shard contributes a *prefix* of its head, in stream order, so the ops of one
  person (who lives on one shard) leave in the order they were accepted, and each
  shard's resolved part is still a prefix its lease holder can trim;
* ops from different shards are interleaved oldest first, so the request serves the
  longest-waiting ops of the workspace first;
* a shard that is not ready (backing off, or under crash search) contributes nothing;
* the body, ``{"batch":[...]}`` included, never exceeds `max_batch_bytes`; an op over
  `max_op_bytes`, or one that no longer fits, closes its shard for this request (its
  later ops must not overtake it), while the other shards go on filling the body.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from service.delivery.packing import ENVELOPE_BYTES, batch_body


@dataclass(frozen=True, slots=True)
class ShardHead:
    """The head of one shard as the packer sees it."""

    shard: Hashable
    #: The head's ops, oldest first, as serialized bytes.
    ops: Sequence[bytes]
    #: For each op, a key that orders it against other shards' ops (accept time, seq).
    order: Sequence[tuple[int, int]]
    #: At most this many ops may come from this shard (crash search cuts it down).
    cap: int
    #: False for a shard that is backing off or otherwise held back: it is skipped.
    ready: bool = True


@dataclass(frozen=True, slots=True)
class Packed:
    """One request body and where each of its ops came from."""

    body: bytes
    #: For each op of the body, in body order: (index of its head in the input, op index).
    sources: tuple[tuple[int, int], ...]
    #: How many ops each input head contributes (a prefix of its ops).
    taken: tuple[int, ...]
    #: True when some op was left out for lack of room: the body is as full as it gets.
    full: bool

    @property
    def count(self) -> int:
        return len(self.sources)


def pack_heads(heads: Sequence[ShardHead], *, max_batch_bytes: int, max_op_bytes: int) -> Packed:
    """The body carrying the oldest ops of the ready `heads`, as many as fit."""
    taken = [0] * len(heads)
    sources: list[tuple[int, int]] = []
    ops: list[bytes] = []
    size = ENVELOPE_BYTES
    full = False
    # One cursor per ready shard, ordered by its next op's order key; a shard leaves
    # the heap when its cap is reached, its head is used up, or its next op is refused.
    heap = [
        (head.order[0], n)
        for n, head in enumerate(heads)
        if head.ready and head.cap > 0 and head.ops
    ]
    heapq.heapify(heap)
    while heap:
        _, n = heapq.heappop(heap)
        head = heads[n]
        op = head.ops[taken[n]]
        added = len(op) + (1 if ops else 0)
        if len(op) > max_op_bytes:
            continue  # the op goes out alone (as an oversize report) when it heads its shard
        if size + added > max_batch_bytes:
            full = True
            continue
        size += added
        ops.append(op)
        sources.append((n, taken[n]))
        taken[n] += 1
        if taken[n] < min(head.cap, len(head.ops)):
            heapq.heappush(heap, (head.order[taken[n]], n))
    return Packed(batch_body(ops), tuple(sources), tuple(taken), full)
