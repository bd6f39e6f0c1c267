"""The shards one drain holds, their buffered heads, and what goes out next.

A drain starts with the lease of the shard it was triggered for (the *primary*). When
that head alone would make a small request, `HeldShards.gather` leases other shards of
the same workspace and traffic class that have work, no holder and no retry wait, and
`next_step` packs their heads together (`service.delivery.across_shards`). A shard
with a backlog of its own is left to its own drain, so under backlog every shard still
fills requests by itself and workers drain different shards in parallel.

A shard's head goes out alone (never packed with other shards) when its kind does not
batch (a v1 job, an App API send or trigger), it is over its lane's size limit, or
under crash search: a send from it died without an outcome,
so each shard of a request that died is then searched on its own and a job that kills
workers is quarantined without taking other shards' jobs with it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import overload

from service import keys
from service.config import DrainSettings, QueueSettings
from service.delivery.across_shards import ShardHead, pack_heads
from service.delivery.crash_search import InflightNote, next_send
from service.delivery.packing import batch_body, batch_size_bytes
from service.delivery.upstream import KeptAnswer, decode_answer
from service.jobs import batching_kinds, job_kind
from service.lanes.registry import LANES
from service.store.leases import Lease
from service.store.shard_state import ShardLook
from service.store.shards import Entry, FirstLook, ShardStore
from service.stream_ids import id_key
from workers.drain.send import OutgoingUnit
from workers.drain.settings import Limits

#: Op size assumed for a shard not read yet, to decide how many shards to lease.
GUESS_OP_BYTES = 256


@dataclass(frozen=True, slots=True)
class NextRequest:
    """The next request: its unit, and the inflight note to store per shard first."""

    unit: OutgoingUnit
    notes: dict[keys.ShardKeys, InflightNote]
    #: The answer the api's own send got (`service.lanes.app.inline`): the unit is settled
    #: by it instead of being sent (its note stays as the api wrote it).
    answer: KeptAnswer | None = None


@dataclass(frozen=True, slots=True)
class Interrupted:
    """A job of a lane never resent (App) whose send started and never came back."""

    entry: Entry


@dataclass(frozen=True, slots=True)
class Quarantine:
    """A head that died alone `crashes` times: it leaves the queue unsent."""

    entry: Entry
    crashes: int


class HeldShards:
    """Leases and buffered heads of the shards one drain holds."""

    def __init__(
        self,
        store: ShardStore,
        queue: QueueSettings,
        drain: DrainSettings,
        limits: Limits,
        primary: Lease,
        now_ms: Callable[[], int],
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.max_ops_per_read = queue.max_ops_per_read
        self.shards = queue.shards
        self.drain = drain
        self.primary = primary.shard
        self.spec = LANES[primary.shard.lane]
        self.limits = limits
        self.leases: dict[keys.ShardKeys, Lease] = {primary.shard: primary}
        self.buffers: dict[keys.ShardKeys, list[Entry]] = {primary.shard: []}
        self.now_ms = now_ms
        self.rng = rng
        #: Shards leased and handed back at once because they hold a backlog of their own.
        self.backlogged: list[keys.ShardKeys] = []
        #: The last `survey`: every shard's length, lease and retry wait.
        self.looks: list[ShardLook] = []
        #: Mean size of the ops read so far, to size what waits unread.
        self.op_bytes = GUESS_OP_BYTES
        #: Each held shard's in-flight note as last read or written: only the lease
        #: holder writes it (fenced), so it is read once per lease, not once per send.
        self.notes: dict[keys.ShardKeys, InflightNote] = {}
        #: Shards whose buffer was just read (with the lease, or with a resolve).
        self._fresh: set[keys.ShardKeys] = set()

    def prime(self, look: FirstLook) -> None:
        """Take the primary's head and note as read with its lease."""
        self.buffers[self.primary] = list(look.head)
        self.notes[self.primary] = look.note
        self._fresh.add(self.primary)

    def noted(self, shard: keys.ShardKeys, note: InflightNote) -> None:
        """The drain wrote `note` for `shard` before a send."""
        self.notes[shard] = note

    def refresh(self) -> None:
        """Top up every held shard's buffer to `max_ops_per_read`, in one round trip."""
        limit = self.max_ops_per_read
        # A lane that sends each job alone needs one head, not a full buffer: it reads
        # again when its buffer is empty (one round trip per read, not per send).
        low = limit if self.spec.batches else 1
        wanted = [
            (shard, buffer[-1].id if buffer else None, limit - len(buffer))
            for shard, buffer in self.buffers.items()
            if len(buffer) < low and shard not in self._fresh
        ]
        self._fresh.clear()
        if wanted:
            for (shard, _, _), found in zip(wanted, self.store.read_many(wanted), strict=True):
                self.buffers[shard] += found

    def survey(self) -> None:
        """Look at every shard of the workspace (one round trip): how much waits where."""
        p = self.primary
        shards = [keys.shard_keys(p.workspace, n, p.lane, p.traffic) for n in range(self.shards)]
        self.looks = self.store.look(shards)
        read = [e for buffer in self.buffers.values() for e in buffer]
        self.op_bytes = sum(len(e.payload) for e in read) // len(read) if read else GUESS_OP_BYTES

    @property
    def backlog(self) -> bool:
        """Whether the workspace's shards hold a backlog (`is_backlog`)."""
        return is_backlog(sum(look.length for look in self.looks), self.limits, self.op_bytes)

    def gather(self) -> None:
        """Lease other shards with work until their heads could fill a request."""
        if fills_alone(self.buffers[self.primary], self.max_ops_per_read, self.limits):
            return
        size = sum(batch_size_bytes([len(e.payload) for e in b]) for b in self.buffers.values())
        if size >= self.limits.batch_bytes:
            return
        now_ms = self.now_ms()
        looks = [
            look
            for look in self.looks
            if look.shard not in self.leases
            and look.length
            and not look.leased
            and look.not_before_ms <= now_ms
            and look.length < self.max_ops_per_read  # a backlog: its own drain fills requests
        ]
        start = int(self.rng() * len(looks)) if looks else 0
        chosen: list[keys.ShardKeys] = []
        for look in looks[start:] + looks[:start]:
            if size >= self.limits.batch_bytes:
                break
            chosen.append(look.shard)
            size += look.length * (self.op_bytes + 1)
        leases = [
            lease
            for lease in self.store.acquire_many(chosen, lease_ms=self.drain.lease_ms)
            if lease
        ]
        wanted = [(lease.shard, None, self.max_ops_per_read) for lease in leases]
        for lease, found in zip(leases, self.store.read_many(wanted), strict=True):
            if fills_alone(found, self.max_ops_per_read, self.limits):
                lease.release()
                self.backlogged.append(lease.shard)
                continue
            self.leases[lease.shard] = lease
            self.buffers[lease.shard] = found

    def next_step(self) -> NextRequest | Interrupted | Quarantine | None:
        """What goes out next from the held heads; None when they are all empty."""
        waiting = [shard for shard, buffer in self.buffers.items() if buffer]
        if not waiting:
            return None
        alone: list[tuple[tuple[int, int], keys.ShardKeys, InflightNote]] = []
        packable: list[tuple[keys.ShardKeys, InflightNote]] = []
        unknown = [shard for shard in waiting if shard not in self.notes]
        if unknown:
            self.notes.update(zip(unknown, self.store.inflight_notes(unknown), strict=True))
        for shard in waiting:
            note = self.notes[shard]
            buffer = self.buffers[shard]
            head = buffer[0]
            if self.spec.interrupted is not None and note.head == head.id:
                if note.answer is not None:
                    unit = OutgoingUnit([head], head.payload, head.kind, full=True)
                    return NextRequest(unit, {}, decode_answer(note.answer))
                return Interrupted(head)
            plan = next_send(
                note,
                [e.id for e in buffer],
                max(len(_batch_run(buffer)), 1),
                crash_limit=self.drain.crash_limit,
            )
            if plan is None:
                return Quarantine(head, self.drain.crash_limit)
            oversize = len(head.payload) > self.limits.item_bytes
            if not job_kind(head.kind).batches or oversize or plan.suspect_last is not None:
                alone.append((id_key(head.id), shard, plan))
            else:
                packable.append((shard, plan))
        if alone:
            _, shard, plan = min(alone, key=lambda found: found[0])
            return self._send_alone(shard, plan)
        return self._pack(packable)

    def _send_alone(self, shard: keys.ShardKeys, plan: InflightNote) -> NextRequest:
        head = self.buffers[shard][0]
        if not job_kind(head.kind).batches:
            unit = OutgoingUnit(entries=[head], body=head.payload, kind=head.kind, full=True)
        elif len(head.payload) > self.limits.item_bytes:
            unit = OutgoingUnit([head], head.payload, head.kind, full=True, oversize=True)
        else:
            return self._pack([(shard, plan)], cap=plan.count)
        return NextRequest(unit, {shard: replace(plan, count=1)})

    def _pack(
        self, packable: list[tuple[keys.ShardKeys, InflightNote]], cap: int | None = None
    ) -> NextRequest:
        heads = []
        for shard, _ in packable:
            run = _batch_run(self.buffers[shard])
            heads.append(
                ShardHead(
                    shard,
                    [e.payload for e in run],
                    _OrderKeys(run),
                    cap=len(run) if cap is None else cap,
                )
            )
        packed = pack_heads(
            heads, max_batch_bytes=self.limits.batch_bytes, max_op_bytes=self.limits.item_bytes
        )
        entries = [self.buffers[packable[n][0]][i] for n, i in packed.sources]
        taken = {shard: count for (shard, _), count in zip(packable, packed.taken, strict=True)}
        # Full: some op was left behind (no room, or a v1 job or oversize op next), or
        # a buffer holds a whole read: the request goes now, without lingering.
        full = any(count < len(self.buffers[shard]) for shard, count in taken.items()) or any(
            len(buffer) >= self.max_ops_per_read for buffer in self.buffers.values()
        )
        notes = {
            shard: replace(plan, count=taken)
            for (shard, plan), taken in zip(packable, packed.taken, strict=True)
            if taken
        }
        kind = entries[0].kind if entries else self.spec.kinds[0].name
        transform = self.spec.transform
        if transform is not None and self.limits.transform_on:
            merged = transform.merge([e.payload for e in entries], self.limits.item_bytes)
            if merged.saved:
                body = batch_body(merged.ops)
                unit = OutgoingUnit(entries, body, kind, full, origin=merged.origin)
                return NextRequest(unit, notes)
        return NextRequest(OutgoingUnit(entries, packed.body, kind, full), notes)

    def advance(
        self,
        resolved: dict[keys.ShardKeys, int],
        peeked: dict[keys.ShardKeys, list[Entry]] | None = None,
    ) -> None:
        """Drop what a send resolved from the front of each shard's buffer; an emptied
        buffer takes the head read with the resolve (`peeked`), and `refresh` leaves that
        shard alone once."""
        for shard, count in resolved.items():
            del self.buffers[shard][:count]
        for shard, head in (peeked or {}).items():
            if not self.buffers[shard]:
                self.buffers[shard] = head
                self._fresh.add(shard)

    def renew(self) -> None:
        for lease in self.leases.values():
            lease.renew()

    def release(
        self, *, marker_ms: int, cover: bool, released: set[keys.ShardKeys] | None = None
    ) -> dict[keys.ShardKeys, int]:
        """Hand every lease back; returns how many entries each shard still holds.

        The primary keeps its trigger marker `marker_ms`; the other shards keep it too
        when `cover` (the primary's re-trigger will pack them again), else it is cleared.
        A shard `released` already (with its last entry's resolve) is left alone: empty.
        """
        gone = released or set()
        return {
            shard: 0
            if shard in gone
            else lease.release(marker_ms=marker_ms if cover or shard == self.primary else 0)
            for shard, lease in self.leases.items()
        }


def fills_alone(buffer: list[Entry], max_ops_per_read: int, limits: Limits) -> bool:
    """Whether a shard's buffered head fills a request by itself (a backlog)."""
    if len(buffer) >= max_ops_per_read:
        return True
    run = _batch_run(buffer)
    return batch_size_bytes([len(e.payload) for e in run]) > limits.batch_bytes


class _OrderKeys(Sequence[tuple[int, int]]):
    """A run's order keys (`id_key` of each entry's id), each parsed when the packer asks:
    it looks at the ops it takes and one more per shard, ~1,000 of a 4,000-entry buffer
    on each request of a backlog (packing one took 2.3 ms parsing all, 1.5 ms this way)."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Sequence[Entry]) -> None:
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    @overload
    def __getitem__(self, index: int) -> tuple[int, int]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[int, int]]: ...

    def __getitem__(self, index: int | slice) -> tuple[int, int] | Sequence[tuple[int, int]]:
        if isinstance(index, slice):
            return [id_key(e.id) for e in self._entries[index]]
        return id_key(self._entries[index].id)


def _batch_run(buffer: list[Entry]) -> list[Entry]:
    """The head's leading batch jobs (Track v2 ops or Pipelines calls): what a batch may
    carry from this shard; a lane's streams hold one batch kind."""
    batching = batching_kinds()
    for n, entry in enumerate(buffer):
        if entry.kind not in batching:
            return buffer[:n]
    return buffer


def is_backlog(waiting_ops: int, limits: Limits, op_bytes: int = GUESS_OP_BYTES) -> bool:
    """Whether more than two full requests wait in a lane's shards of one traffic class.

    Live traffic fits in about one request per linger window; more than that is a backlog,
    which drains from the bulk queue so it cannot hold back live triggers. The drain and
    the sweeper both decide by this rule: when the sweeper used its own (one shard's
    length), it sent live triggers for shards every live drain then handed to the bulk
    queue, and on a loaded machine those filled the live queue so that the bulk queue,
    served only when the live one is empty, never ran.
    """
    return waiting_ops * (op_bytes + 1) > 2 * limits.batch_bytes
