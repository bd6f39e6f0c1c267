"""The multi-shard packer: no op lost, duplicated or reordered within a shard; every body
within the byte limit; a shard that is not ready is never packed."""

from __future__ import annotations

import random

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from service.delivery.across_shards import ShardHead, pack_heads
from service.delivery.packing import batch_body

MAX_OP = 300


def op(shard: int, seq: int, pad: int) -> bytes:
    return orjson.dumps({"s": shard, "n": seq, "p": "x" * pad})


def heads_of(
    queues: dict[int, list[tuple[tuple[int, int], bytes]]],
    caps: dict[int, int],
    ready: dict[int, bool],
) -> list[ShardHead]:
    return [
        ShardHead(
            shard,
            [payload for _, payload in queue],
            [order for order, _ in queue],
            cap=caps[shard],
            ready=ready[shard],
        )
        for shard, queue in sorted(queues.items())
    ]


shard_ops = st.lists(
    st.lists(st.tuples(st.integers(0, 50), st.integers(0, 2 * MAX_OP)), max_size=25),
    min_size=1,
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(
    shard_ops,
    st.integers(200, 3000),
    st.randoms(use_true_random=False),
)
def test_draining_with_the_packer_keeps_every_op_once_in_order(
    spec: list[list[tuple[int, int]]], max_batch: int, rnd: random.Random
) -> None:
    """Drain shards request by request, some shards held back each round, caps varying."""
    queues: dict[int, list[tuple[tuple[int, int], bytes]]] = {}
    for shard, ops in enumerate(spec):
        clock = 0
        queue = []
        for seq, (gap, pad) in enumerate(ops):
            clock += gap
            queue.append(((clock, seq), op(shard, seq, pad)))
        queues[shard] = queue
    sent: dict[int, list[int]] = {shard: [] for shard in queues}
    oversize: dict[int, list[int]] = {shard: [] for shard in queues}
    for _ in range(10_000):
        if not any(queues.values()):
            break
        ready = {shard: rnd.random() < 0.7 for shard in queues}
        caps = {shard: rnd.choice([1, 2, 5, 1000]) for shard in queues}
        # A shard whose head is oversize has it reported alone, as the drain does.
        for shard, queue in queues.items():
            if queue and len(queue[0][1]) > MAX_OP and ready[shard]:
                oversize[shard].append(orjson.loads(queue.pop(0)[1])["n"])
        heads = heads_of(queues, caps, ready)
        packed = pack_heads(heads, max_batch_bytes=max_batch, max_op_bytes=MAX_OP)
        assert len(packed.body) <= max_batch
        body = orjson.loads(packed.body)["batch"]
        assert packed.count == len(body)
        orders = []
        for (n, index), item in zip(packed.sources, body, strict=True):
            head = heads[n]
            assert head.ready, "a shard that is not ready was packed"
            assert item["s"] == head.shard
            assert index < head.cap
            orders.append(head.order[index])
        assert orders == sorted(orders), "ops are not oldest first across shards"
        for n, head in enumerate(heads):
            got = [item["n"] for (m, _), item in zip(packed.sources, body, strict=True) if m == n]
            expected = [orjson.loads(p)["n"] for p in head.ops[: packed.taken[n]]]
            assert got == expected, "a shard's part is not a prefix of its head, in order"
            assert isinstance(head.shard, int)
            sent[head.shard] += got
            del queues[head.shard][: packed.taken[n]]
        assert packed.body == batch_body([orjson.dumps(item) for item in body])
    assert not any(queues.values()), "the shards never drained"
    for shard, ops in enumerate(spec):
        delivered = sorted(sent[shard] + oversize[shard])
        assert delivered == list(range(len(ops))), "an op was lost or sent twice"
        assert sent[shard] == sorted(sent[shard])
        assert all(len(op(shard, n, ops[n][1])) > MAX_OP for n in oversize[shard])


@settings(max_examples=200, deadline=None)
@given(shard_ops, st.integers(200, 3000))
def test_a_body_that_is_not_full_holds_every_ready_op_that_fits(
    spec: list[list[tuple[int, int]]], max_batch: int
) -> None:
    queues = {
        shard: [((seq, 0), op(shard, seq, pad)) for seq, (_, pad) in enumerate(ops)]
        for shard, ops in enumerate(spec)
    }
    heads = heads_of(queues, dict.fromkeys(queues, 1000), dict.fromkeys(queues, True))
    packed = pack_heads(heads, max_batch_bytes=max_batch, max_op_bytes=MAX_OP)
    if packed.full:
        return
    for n, head in enumerate(heads):
        stop = next((i for i, p in enumerate(head.ops) if len(p) > MAX_OP), len(head.ops))
        assert packed.taken[n] == stop


def test_two_shards_interleave_oldest_first_and_a_refused_op_closes_only_its_shard() -> None:
    a = ShardHead("a", [b"1" * 50, b"2" * 10], [(1, 0), (5, 0)], cap=10)
    b = ShardHead("b", [b"3" * 10, b"4" * 10], [(2, 0), (3, 0)], cap=10)
    late = ShardHead("c", [b"5" * 10], [(0, 0)], cap=10, ready=False)
    # Room for the 50-byte op and two 10-byte ops, but not three.
    packed = pack_heads([a, b, late], max_batch_bytes=12 + 50 + 11 + 11, max_op_bytes=100)
    assert packed.sources == ((0, 0), (1, 0), (1, 1))
    assert packed.taken == (1, 2, 0)
    assert packed.full
