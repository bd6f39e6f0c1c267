"""Sending one unit (ops from the heads of one or more shards) and resolving each op.

`Delivery.deliver` returns a `Delivered`: how many head entries of each shard it
resolved (delivered or dead-lettered) and, when it had to stop, the outcome that blocks
delivery. Every entry names its shard, so each outcome lands on the right shard: a
207's ``batch_index`` is the entry at that place in the body, and each shard's resolved
entries are trimmed from its stream under that shard's own lease. A whole-request 400 is
split in halves and resent until the rejected ops are isolated; only those are
dead-lettered, and every op before them is resolved as soon as its half succeeds.
Halves may span shards: each shard's entries keep their order in the body, so what a
half resolves is always the next part of each shard's head.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from service import keys
from service.config import MetricsSettings
from service.delivery.outcomes import (
    RESOLVED,
    Outcome,
    OutcomeClass,
    PendingWrite,
    SlotRequest,
)
from service.delivery.packing import batch_body
from service.delivery.upstream import KeptAnswer, LaneClient
from service.jobs import Lane
from service.lanes.registry import LANES
from service.metrics import definitions as metrics
from service.metrics.queue_state import queue_drained
from service.store.dead_letters import DeadLetter, DeadLetterStore, LetterClass, LetterReason
from service.store.leases import Lease
from service.store.sent_index import record_sent
from service.store.shards import Entry, ShardStore
from workers.drain.settings import NO_SENT_INDEX, Limits, SentIndexing

log = logging.getLogger("cioq.delivery")


@dataclass(frozen=True, slots=True)
class OutgoingUnit:
    """Head entries that go out in one request, in body order (shards may interleave)."""

    entries: list[Entry]
    body: bytes
    #: The entries' job kind: a batch kind's body holds them all, any other is one job.
    kind: str
    full: bool
    #: When transformed (coalesced): for each entry, the index of the op in `body` that
    #: carries it.
    origin: tuple[int, ...] = ()
    #: A job over its lane's size limit: never sent, dead-lettered.
    oversize: bool = False

    @property
    def count(self) -> int:
        return len(self.entries)

    def by_shard(self) -> dict[keys.ShardKeys, list[Entry]]:
        """The unit's entries per shard, each list in stream order."""
        return by_shard(self.entries)


def by_shard(entries: list[Entry]) -> dict[keys.ShardKeys, list[Entry]]:
    found: dict[keys.ShardKeys, list[Entry]] = {}
    for entry in entries:
        found.setdefault(entry.shard, []).append(entry)
    return found


@dataclass(frozen=True, slots=True)
class Delivered:
    """What one `Delivery.deliver` call came to."""

    #: Entries resolved from each shard's head (delivered or dead-lettered).
    resolved: dict[keys.ShardKeys, int]
    #: The outcome that stopped delivery (throttle, setup, transient), or None.
    blocked: Outcome | None = None

    def plus(self, more: Delivered) -> Delivered:
        total = dict(self.resolved)
        for shard, count in more.resolved.items():
            total[shard] = total.get(shard, 0) + count
        return Delivered(total, more.blocked)


@dataclass(slots=True)
class DeliveryCounts:
    """Running totals of one drain's sends, for its report."""

    requests: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    bisect_requests: int = 0


class Delivery:
    """Sends units of one workspace and resolves their ops, each under its shard's lease."""

    def __init__(
        self,
        workspace: str,
        lane: Lane,
        store: ShardStore,
        leases: Mapping[keys.ShardKeys, Lease],
        dead: DeadLetterStore,
        client: LaneClient,
        limits: Limits,
        metrics: MetricsSettings,
        now_ms: Callable[[], int],
        should_stop: Callable[[], bool] = lambda: False,
        sent_index: SentIndexing = NO_SENT_INDEX,
        max_ops: int = 0,
    ) -> None:
        self.workspace = workspace
        self.lane = lane
        self.spec = LANES[lane]
        #: The drain's held leases; it adds shards as it packs them.
        self.leases = leases
        self.store = store
        self.dead = dead
        self.client = client
        self.limits = limits
        self.metrics = metrics
        self.now_ms = now_ms
        self.should_stop = should_stop
        self.sent_index = sent_index
        self.counts = DeliveryCounts()
        #: How many head entries to read with each resolve (0: none). A lane that sends
        #: each job alone reads its next head so, not in a round trip of its own.
        self.peek = 0 if self.spec.batches else max_ops
        self.peeked: dict[keys.ShardKeys, list[Entry]] = {}
        #: Shards whose lease went back with their last entry (`peek` only): the drain
        #: holds them no more and stops, releasing nothing.
        self.released: set[keys.ShardKeys] = set()

    def slot_request(self, unit: OutgoingUnit) -> SlotRequest | None:
        """What a lone job must take before it goes out (the App lane's rate slot), asked with
        its in-flight note; None for a lane that takes nothing (or a unit of several jobs)."""
        ask = self.spec.slot_request
        if ask is None or unit.count != 1 or unit.oversize:
            return None
        return ask(self.client, unit.body)

    def answered(self, unit: OutgoingUnit, answer: KeptAnswer) -> None:
        """The api sent `unit`'s one job and left its `answer`: the next `deliver` settles
        the job by it instead of sending it (the lane's `answered` hook)."""
        assert self.spec.answered is not None  # only a lane that keeps answers gets one
        self.spec.answered(self.client, unit.body, answer)

    def deliver(self, unit: OutgoingUnit) -> Delivered:
        """Send `unit` and resolve what the answer allows."""
        if unit.oversize:
            size = len(unit.entries[0].payload)
            limit = self.limits.item_bytes
            self._dead_letter(
                unit.entries[:1],
                reason=LetterReason.OP_TOO_LARGE,
                outcome_class=LetterClass.INVALID,
                message=f"job is {size} bytes, over the {self.lane} lane's {limit}",
            )
            return Delivered(self._resolve(unit.entries[:1]))
        outcome = self._send(unit.entries, unit.body, unit.kind)
        if unit.origin:
            assert self.spec.transform is not None  # only a transform sets an origin
            outcome = self.spec.transform.expand(outcome, unit.origin)
            if outcome.outcome_class in RESOLVED:
                saved = unit.count - len(set(unit.origin))
                metrics.ops_coalesced(self.workspace, saved)
        if outcome.outcome_class is OutcomeClass.INVALID and unit.count > 1:
            return self._isolate(unit.entries, unit.kind)
        return self._settle(unit.entries, outcome)

    def _send(self, entries: list[Entry], body: bytes, kind: str) -> Outcome:
        started_s = time.perf_counter()
        outcome = self.spec.send(self.client, kind, body, len(entries))
        elapsed_s = time.perf_counter() - started_s
        if outcome.outcome_class is OutcomeClass.DEFERRED:
            # The lane sent nothing (no rate slot soon enough): no request to count, nor
            # an error in Customer.io's error ratio.
            return outcome
        self.counts.requests += 1
        metrics.upstream_request(
            self.workspace,
            kind,
            outcome,
            elapsed_s if outcome.upstream_s is None else outcome.upstream_s,
            body_bytes=len(body),
            ops=len(entries),
            lane=self.lane,
        )
        return outcome

    def _settle(self, entries: list[Entry], outcome: Outcome) -> Delivered:
        """Resolve `entries` after `outcome`, or none of them when it blocks delivery."""
        workspace = self.workspace
        if outcome.outcome_class is OutcomeClass.SUCCESS:
            self.counts.delivered += len(entries)
            accepted = ((e.accepted_ms, e.producer) for e in entries)
            metrics.delivered(workspace, accepted, self.now_ms(), self.lane)
            self._index(entries)
            return Delivered(self._resolve(entries, before=outcome.pending))
        if outcome.pending is not None:  # only a success carries one; written all the same
            outcome.pending.run()
        if outcome.outcome_class is OutcomeClass.PARTIAL:
            failed = {e.batch_index: e for e in outcome.item_errors}
            for index, err in failed.items():
                self._dead_letter(
                    [entries[index]],
                    reason=err.reason or LetterReason.INVALID,
                    outcome_class=LetterClass.PARTIAL,
                    status=outcome.status,
                    message=err.message,
                    field=err.field,
                )
            self.counts.delivered += len(entries) - len(failed)
            ok = ((e.accepted_ms, e.producer) for i, e in enumerate(entries) if i not in failed)
            metrics.delivered(workspace, ok, self.now_ms(), self.lane)
            self._index([e for i, e in enumerate(entries) if i not in failed])
            return Delivered(self._resolve(entries))
        if outcome.outcome_class in (OutcomeClass.INVALID, OutcomeClass.AMBIGUOUS):
            # Ambiguous (App lane): Customer.io may have acted; an operator decides.
            self._dead_letter(
                entries,
                reason=LetterReason(outcome.outcome_class.value),
                outcome_class=LetterClass(outcome.outcome_class.value),
                status=outcome.status,
                message=outcome.detail,
            )
            return Delivered(self._resolve(entries))
        return Delivered({}, blocked=outcome)

    def _index(self, delivered: list[Entry]) -> None:
        """Keep what Customer.io just accepted, so a late failure can be tied to its job
        (one pipelined write per request; only for workspaces whose log is polled)."""
        if not self.sent_index.on(self.workspace):
            return
        try:
            record_sent(
                self.store.redis,
                self.workspace,
                self.lane,
                delivered,
                self.now_ms(),
                window_s=self.sent_index.window_s,
                per_person=self.sent_index.per_person,
            )
        except Exception:  # Customer.io took these jobs: they must be resolved whatever happens
            log.warning("%s: indexing delivered jobs failed", self.workspace, exc_info=True)

    def _isolate(self, entries: list[Entry], kind: str) -> Delivered:
        """Bisect a rejected batch until each rejected op stands alone."""
        n = len(entries)
        shards = list(by_shard(entries))
        pending: deque[tuple[int, int]] = deque([(0, n // 2), (n // 2, n)])
        done = Delivered({})
        while pending:
            # Bisection may take many requests: a stopping worker hands back what is left
            # (the next holder starts over on it), and a long one keeps its leases.
            if self.should_stop():
                for shard in shards:
                    self.leases[shard].clear_inflight()  # a handover, not a crash
                return done
            for shard in shards:
                self.leases[shard].renew()
            start, stop = pending.popleft()
            part = entries[start:stop]
            outcome = self._send(part, batch_body([e.payload for e in part]), kind)
            self.counts.bisect_requests += 1
            metrics.bisect_request(self.workspace)
            if outcome.outcome_class is OutcomeClass.INVALID and len(part) > 1:
                mid = (start + stop) // 2
                pending.extendleft([(mid, stop), (start, mid)])
                continue
            done = done.plus(self._settle(part, outcome))
            if done.blocked is not None:
                return done
        return done

    def exhausted(self, entries: list[Entry], last: Outcome, *, reason: LetterReason) -> None:
        """A shard's retry budget is spent: dead-letter its `entries` with every attempt."""
        retry = self.store.retry_state(entries[0].shard)
        self._dead_letter(
            entries,
            reason=reason,
            outcome_class=LetterClass.TRANSIENT,
            status=last.status,
            message=last.detail,
            attempts=retry.history,
        )
        self._resolve(entries)

    def interrupted(self, entry: Entry) -> Delivered:
        """A job of a lane never resent (App) whose send died without an outcome.

        Delivered if the lane says Customer.io answered 2xx (the worker died after the
        answer, before deleting the job); otherwise dead-lettered as ambiguous.
        """
        assert self.spec.interrupted is not None  # `HeldShards` checks the lane
        # The note stays until the head is trimmed (resolve keeps it, and it no longer
        # names the next head): a failure before that leaves the job noted, never resent.
        if self.spec.interrupted(self.client, entry.payload):
            self.counts.delivered += 1
            return Delivered(self._resolve([entry]))
        log.error(
            "%s: the send of %r died without an outcome; ambiguous", entry.shard.tag, entry.id
        )
        self._dead_letter(
            [entry],
            reason=LetterReason.AMBIGUOUS,
            outcome_class=LetterClass.AMBIGUOUS,
            message="the worker died during the send: Customer.io may have acted on it",
        )
        return Delivered(self._resolve([entry]))

    def quarantine(self, entry: Entry, crashes: int) -> Delivered:
        """A job that took its worker down `crashes` times leaves the queue."""
        log.error("quarantining %r of %s after %d crashes", entry.id, entry.shard.tag, crashes)
        self._dead_letter(
            [entry],
            reason=LetterReason.CRASH_LOOP,
            outcome_class=LetterClass.CRASH,
            message=f"worker died {crashes} times while delivering this job",
        )
        return Delivered(self._resolve([entry]))

    def _resolve(
        self, entries: list[Entry], *, before: PendingWrite | None = None
    ) -> dict[keys.ShardKeys, int]:
        """Trim `entries` (the next part of each of their shards' heads), shard by shard."""
        parts = by_shard(entries)
        # The drain-rate record rides along (one round trip per resolve, not two), and so
        # does the next read of a lane that sends each job alone (`peek`).
        done = self.store.resolve_many(
            [(self.leases[shard], own[-1].id) for shard, own in parts.items()],
            also=lambda pipe: queue_drained(pipe, self.workspace, len(entries), self.metrics),
            peek=self.peek,
            before=before,
        )
        resolved: dict[keys.ShardKeys, int] = {}
        for (shard, own), count, head in zip(parts.items(), done.counts, done.heads, strict=True):
            if count != len(own):
                log.error("resolved %d entries of %s, expected %d", count, shard.tag, len(own))
            resolved[shard] = len(own)
            if head is not None:
                self.peeked[shard] = head
        self.released |= done.released
        return resolved

    def take_peeked(self) -> dict[keys.ShardKeys, list[Entry]]:
        """The shards' heads read with their last resolves (`peek`), once."""
        found, self.peeked = self.peeked, {}
        return found

    def _dead_letter(
        self,
        entries: list[Entry],
        *,
        reason: str,
        outcome_class: str,
        status: int | None = None,
        message: str = "",
        field: str = "",
        attempts: tuple[tuple[int, str], ...] = (),
    ) -> None:
        now = self.now_ms()
        if self.spec.after_dead_letter is not None:
            for e in entries:
                self.spec.after_dead_letter(self.client, e.payload, outcome_class, message)
        history = attempts or ((now, str(status) if status is not None else outcome_class),)
        fences = [self.leases[shard].fence for shard in by_shard(entries)]
        self.dead.add(
            self.workspace,
            (
                DeadLetter(
                    kind=e.kind,
                    payload=e.payload,
                    source=f"{self.workspace}:{e.shard.shard}:{e.id.decode()}",
                    reason=reason,
                    outcome_class=outcome_class,
                    status=status,
                    message=message,
                    field=field,
                    attempts=history,
                    accepted_ms=e.accepted_ms,
                    dead_ms=now,
                    producer=e.producer,
                    entry=f"{e.shard.tag}:{e.id.decode()}",
                )
                for e in entries
            ),
            fences,
        )
        self.counts.dead_lettered += len(entries)
