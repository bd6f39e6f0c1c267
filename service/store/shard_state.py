"""The one reader of shard state: what waits in a shard's stream, since when, and
whether a drain may take the shard now (lease, retry wait, trigger marker).

The drain packs by it (`ShardStore.look`), the sweeper triggers by it, and the backlog
marks (`service.store.backpressure`) and gauges (`service.metrics.queue_state`) read
their streams' fill with it, on a pipeline of their own (sync or asyncio).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service import keys
from service.store.connections import SyncStore, store_errors
from service.stream_ids import id_ms


@dataclass(frozen=True, slots=True)
class ShardLook:
    """A glance at a shard: what waits in it, and whether a drain may take it now."""

    shard: keys.ShardKeys
    length: int
    leased: bool
    not_before_ms: int
    #: Whether its trigger marker is set (a drain is due); read only when asked for.
    triggered: bool = False


def look_at(
    client: SyncStore, shards: Sequence[keys.ShardKeys], *, triggers: bool = False
) -> list[ShardLook]:
    """Length, lease, retry wait (and, with `triggers`, trigger marker) of each shard, in
    one round trip: what the drain packs by and the sweeper triggers by."""
    pipe = client.pipeline(transaction=False)
    for shard in shards:
        pipe.xlen(shard.stream)
        pipe.exists(shard.lease)
        pipe.hget(shard.retry, "not_before_ms")
        if triggers:
            pipe.exists(shard.trigger)
    with store_errors("looking at shards"):
        raw = pipe.execute()
    width = 4 if triggers else 3
    return [
        ShardLook(
            shard,
            int(raw[width * n]),
            bool(raw[width * n + 1]),
            int(raw[width * n + 2] or 0),
            triggers and bool(raw[width * n + 3]),
        )
        for n, shard in enumerate(shards)
    ]


@dataclass(frozen=True, slots=True)
class StreamFill:
    """How much waits in a stream and since when: what backlog gauges and marks read."""

    length: int
    #: When its head was stored (ms), None when it is empty.
    oldest_ms: int | None


def ask_fill(pipe: Any, streams: Sequence[str]) -> None:
    """Queue the reads of `stream_fills` on a pipeline (sync or asyncio; nothing runs yet)."""
    for stream in streams:
        pipe.xlen(stream)
        pipe.xrange(stream, count=1)


def stream_fills(replies: Sequence[Any]) -> list[StreamFill]:
    """Each stream's fill from the replies to `ask_fill`, in its order."""
    return [
        StreamFill(int(length), id_ms(head[0][0]) if head else None)
        for length, head in zip(replies[0::2], replies[1::2], strict=True)
    ]
