"""Sending one unit of a shard's head and resolving every op in it.

`Delivery.deliver` returns a `Delivered`: how many head entries it resolved (delivered
or dead-lettered) and, when it had to stop, the outcome that blocks the shard. A
whole-request 400 is split in halves and resent until the rejected ops are isolated;
only those are dead-lettered, and every op before them is resolved as soon as its half
succeeds.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from service.config import Settings
from service.delivery.client import TrackClient
from service.delivery.outcomes import RESOLVED, Outcome, OutcomeClass
from service.delivery.packing import batch_body
from service.lanes.app.sender import AppSender
from service.lanes.registry import LANES, BatchClient
from service.lanes.track.coalesce import expand_item_errors
from service.metrics import definitions as metrics
from service.metrics.queue_state import record_drained
from service.store.dead_letters import DeadLetter, DeadLetterStore
from service.store.shards import Entry, Lease, ShardStore

log = logging.getLogger("cioq.delivery")

#: A Track v2 batch, a Pipelines ``/v1/batch``, a lone v1 request, a lone App API send or
#: trigger, or a job over its lane's size limit (never sent).
UnitKind = Literal["v2", "cdp", "v1", "app", "oversize"]


@dataclass(frozen=True, slots=True)
class OutgoingUnit:
    """Head entries that go out in one request."""

    entries: list[Entry]
    body: bytes
    kind: UnitKind
    full: bool
    #: When coalesced: for each entry, the index of the op in `body` that carries it.
    origin: tuple[int, ...] = ()

    @property
    def count(self) -> int:
        return len(self.entries)


@dataclass(frozen=True, slots=True)
class Delivered:
    """What one `Delivery.deliver` call came to."""

    #: Entries resolved from the head (delivered or dead-lettered), in order.
    resolved: int
    #: The outcome that stopped delivery (throttle, setup, transient), or None.
    blocked: Outcome | None = None


@dataclass(slots=True)
class DeliveryCounts:
    """Running totals of one drain's sends, for its report."""

    requests: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    bisect_requests: int = 0


class Delivery:
    """Sends units for one leased shard and resolves their ops, fenced by the lease."""

    def __init__(
        self,
        lease: Lease,
        dead: DeadLetterStore,
        client: BatchClient,
        settings: Settings,
        now_ms: Callable[[], int],
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.lease = lease
        self.shard = lease.shard
        self.store: ShardStore = lease.store
        self.dead = dead
        self.client = client
        self.settings = settings
        self.now_ms = now_ms
        self.should_stop = should_stop
        self.counts = DeliveryCounts()

    def deliver(self, unit: OutgoingUnit) -> Delivered:
        """Send `unit` and resolve what the answer allows."""
        if unit.kind == "oversize":
            size = len(unit.entries[0].payload)
            limit = LANES[self.shard.lane].max_item_bytes(self.settings)
            self._dead_letter(
                unit.entries[:1],
                reason="op_too_large",
                outcome_class="invalid",
                message=f"job is {size} bytes, over the {self.shard.lane} lane's {limit}",
            )
            return Delivered(self._resolve(unit.entries, 1))
        outcome = self._send(unit.entries, unit.body, unit.kind)
        if unit.origin:
            outcome = expand_item_errors(outcome, unit.origin)
            if outcome.outcome_class in RESOLVED:
                saved = unit.count - len(set(unit.origin))
                metrics.ops_coalesced(self.shard.workspace, saved)
        if outcome.outcome_class is OutcomeClass.INVALID and unit.count > 1:
            return self._isolate(unit.entries, unit.kind)
        return self._settle(unit.entries, outcome, 0)

    def _send(self, entries: list[Entry], body: bytes, kind: UnitKind) -> Outcome:
        self.counts.requests += 1
        started_s = time.perf_counter()
        if kind == "v1":
            # v1 jobs live in the Track lane only, whose client is a TrackClient.
            assert isinstance(self.client, TrackClient)
            envelope: dict[str, Any] = orjson.loads(entries[0].payload)
            outcome = self.client.send_v1(
                envelope["method"], envelope["path"], envelope.get("query", ""), envelope["body"]
            )
        else:
            outcome = self.client.send_batch(body, op_count=len(entries))
        elapsed_s = time.perf_counter() - started_s
        metrics.upstream_request(
            self.shard.workspace, kind, outcome, elapsed_s, body_bytes=len(body), ops=len(entries)
        )
        return outcome

    def _settle(self, entries: list[Entry], outcome: Outcome, done: int) -> Delivered:
        """Resolve `entries` (which follow `done` resolved ones) after `outcome`."""
        workspace = self.shard.workspace
        if outcome.outcome_class is OutcomeClass.SUCCESS:
            self.counts.delivered += len(entries)
            accepted = (e.accepted_ms for e in entries)
            metrics.delivered(workspace, accepted, self.now_ms(), self.shard.lane)
            return Delivered(self._resolve(entries, len(entries)) + done)
        if outcome.outcome_class is OutcomeClass.PARTIAL:
            failed = {e.batch_index: e for e in outcome.item_errors}
            for index, err in failed.items():
                self._dead_letter(
                    [entries[index]],
                    reason=err.reason or "invalid",
                    outcome_class="partial",
                    status=outcome.status,
                    message=err.message,
                    field=err.field,
                )
            self.counts.delivered += len(entries) - len(failed)
            ok = (e.accepted_ms for i, e in enumerate(entries) if i not in failed)
            metrics.delivered(workspace, ok, self.now_ms(), self.shard.lane)
            return Delivered(self._resolve(entries, len(entries)) + done)
        if outcome.outcome_class in (OutcomeClass.INVALID, OutcomeClass.AMBIGUOUS):
            # Ambiguous (App lane): Customer.io may have acted; an operator decides.
            self._dead_letter(
                entries,
                reason=outcome.outcome_class,
                outcome_class=outcome.outcome_class,
                status=outcome.status,
                message=outcome.detail,
            )
            return Delivered(self._resolve(entries, len(entries)) + done)
        return Delivered(done, blocked=outcome)

    def _isolate(self, entries: list[Entry], kind: UnitKind) -> Delivered:
        """Bisect a rejected batch until each rejected op stands alone."""
        n = len(entries)
        pending: deque[tuple[int, int]] = deque([(0, n // 2), (n // 2, n)])
        done = Delivered(0)
        while pending:
            # Bisection may take many requests: a stopping worker hands back what is left
            # (the next holder starts over on it), and a long one keeps its lease.
            if self.should_stop():
                self.store.clear_inflight(self.shard)  # a handover, not a crash
                return done
            self.lease.renew()
            start, stop = pending.popleft()
            part = entries[start:stop]
            outcome = self._send(part, batch_body([e.payload for e in part]), kind)
            self.counts.bisect_requests += 1
            metrics.bisect_request(self.shard.workspace)
            if outcome.outcome_class is OutcomeClass.INVALID and len(part) > 1:
                mid = (start + stop) // 2
                pending.extendleft([(mid, stop), (start, mid)])
                continue
            done = self._settle(part, outcome, done.resolved)
            if done.blocked is not None:
                return done
        return done

    def exhausted(self, unit: OutgoingUnit, last: Outcome, *, reason: str) -> int:
        """The retry budget is spent: dead-letter the unit with every attempt's record."""
        retry = self.store.retry_state(self.shard)
        self._dead_letter(
            unit.entries,
            reason=reason,
            outcome_class="transient",
            status=last.status,
            message=last.detail,
            attempts=retry.history,
        )
        return self._resolve(unit.entries, unit.count)

    def interrupted(self, entry: Entry) -> int:
        """An App lane job whose send died without an outcome: never sent again.

        Delivered if its outcome record says Customer.io answered 2xx (the worker died
        after the answer, before deleting the job); otherwise dead-lettered as ambiguous.
        """
        assert isinstance(self.client, AppSender)
        self.store.clear_inflight(self.shard)
        if self.client.was_delivered(entry.payload):
            self.counts.delivered += 1
            return self._resolve([entry], 1)
        log.error("%s: the send of %r died without an outcome; ambiguous", self.shard.tag, entry.id)
        self._dead_letter(
            [entry],
            reason="ambiguous",
            outcome_class="ambiguous",
            message="the worker died during the send: Customer.io may have acted on it",
        )
        return self._resolve([entry], 1)

    def quarantine(self, entry: Entry, crashes: int) -> int:
        """A job that took its worker down `crashes` times leaves the queue."""
        log.error("quarantining %r of %s after %d crashes", entry.id, self.shard.tag, crashes)
        self._dead_letter(
            [entry],
            reason="crash_loop",
            outcome_class="crash",
            message=f"worker died {crashes} times while delivering this job",
        )
        return self._resolve([entry], 1)

    def _resolve(self, entries: list[Entry], count: int) -> int:
        removed = self.lease.resolve(entries[count - 1].id)
        if removed != count:
            log.error("resolved %d entries of %s, expected %d", removed, self.shard.tag, count)
        record_drained(self.store.redis, self.shard.workspace, count, self.settings)
        return count

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
        if isinstance(self.client, AppSender):  # the producer's status URL must say so
            for e in entries:
                self.client.dead_lettered(e.payload, outcome_class=outcome_class, message=message)
        history = attempts or ((now, str(status) if status is not None else outcome_class),)
        self.dead.add(
            self.shard.workspace,
            (
                DeadLetter(
                    kind=e.kind,
                    payload=e.payload,
                    source=f"{self.shard.workspace}:{self.shard.shard}:{e.id.decode()}",
                    reason=reason,
                    outcome_class=outcome_class,
                    status=status,
                    message=message,
                    field=field,
                    attempts=history,
                    accepted_ms=e.accepted_ms,
                    dead_ms=now,
                )
                for e in entries
            ),
        )
        self.counts.dead_lettered += len(entries)
