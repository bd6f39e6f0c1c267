"""Sending one unit of a shard's head and resolving every op in it.

`Delivery.deliver` returns how many head entries it resolved (delivered or dead-lettered)
and, when it had to stop, the outcome class that blocks the shard. A whole-request 400
is split in halves and resent until the rejected ops are isolated; only those are
dead-lettered, and every op before them is resolved as soon as its half succeeds.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from service import keys
from service.config import Settings
from service.delivery.client import TrackClient
from service.delivery.outcomes import RESOLVED, Outcome, OutcomeClass
from service.delivery.packing import batch_body
from service.lanes.track.coalesce import expand_item_errors
from service.metrics import definitions as metrics
from service.metrics.queue_state import record_drained
from service.store.dead_letters import DeadLetter, DeadLetterStore
from service.store.shards import Entry, ShardStore

if TYPE_CHECKING:
    from workers.drain import DrainReport

log = logging.getLogger("cioq.delivery")


class LeaseLost(Exception):
    """The shard's lease expired or was taken over; stop touching the shard."""


@dataclass(frozen=True, slots=True)
class Send:
    """Head entries that go out in one request."""

    entries: list[Entry]
    body: bytes
    kind: str  # "v2" batch, "v1" request, or "oversize" (never sent)
    full: bool
    #: When coalesced: for each entry, the index of the op in `body` that carries it.
    origin: tuple[int, ...] = ()

    @property
    def count(self) -> int:
        return len(self.entries)


class Delivery:
    """Sends units for one leased shard and resolves their ops, fenced by the token."""

    def __init__(
        self,
        store: ShardStore,
        dead: DeadLetterStore,
        shard: keys.ShardKeys,
        token: int,
        client: TrackClient,
        settings: Settings,
        now_ms: Callable[[], int],
        report: DrainReport,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.should_stop = should_stop
        self.store = store
        self.dead = dead
        self.shard = shard
        self.token = token
        self.client = client
        self.settings = settings
        self.now_ms = now_ms
        self.report = report
        self.last_outcome: Outcome | None = None

    def deliver(self, send: Send) -> tuple[int, OutcomeClass | None]:
        """Send `send`; returns (entries resolved from the head, blocking class or None)."""
        if send.kind == "oversize":
            size = len(send.entries[0].payload)
            self._dead_letter(
                send.entries[:1],
                reason="op_too_large",
                cls="invalid",
                message=f"op is {size} bytes, over max_op_bytes={self.settings.max_op_bytes}",
            )
            return self._resolve(send.entries, 1), None
        outcome = self._send(send.entries, send.body, send.kind)
        if send.origin:
            outcome = expand_item_errors(outcome, send.origin)
            if outcome.cls in RESOLVED:
                metrics.ops_coalesced(self.shard.workspace, send.count - len(set(send.origin)))
        if outcome.cls is OutcomeClass.INVALID and send.count > 1:
            return self._isolate(send.entries)
        return self._settle(send.entries, outcome, 0)

    def _send(self, entries: list[Entry], body: bytes, kind: str) -> Outcome:
        self.report.requests += 1
        started_s = time.perf_counter()
        if kind == "v1":
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
        self.last_outcome = outcome
        return outcome

    def _settle(
        self, entries: list[Entry], outcome: Outcome, done: int
    ) -> tuple[int, OutcomeClass | None]:
        """Resolve `entries` (which follow `done` resolved ones) after `outcome`."""
        if outcome.cls is OutcomeClass.SUCCESS:
            self.report.delivered += len(entries)
            metrics.delivered(self.shard.workspace, (e.accepted_ms for e in entries), self.now_ms())
            return self._resolve(entries, len(entries)) + done, None
        if outcome.cls is OutcomeClass.PARTIAL:
            failed = {e.batch_index: e for e in outcome.item_errors}
            for index, err in failed.items():
                self._dead_letter(
                    [entries[index]],
                    reason=err.reason or "invalid",
                    cls="partial",
                    status=outcome.status,
                    message=err.message,
                    field=err.field,
                )
            self.report.delivered += len(entries) - len(failed)
            ok = (e.accepted_ms for i, e in enumerate(entries) if i not in failed)
            metrics.delivered(self.shard.workspace, ok, self.now_ms())
            return self._resolve(entries, len(entries)) + done, None
        if outcome.cls is OutcomeClass.INVALID:
            self._dead_letter(
                entries,
                reason="invalid",
                cls="invalid",
                status=outcome.status,
                message=outcome.detail,
            )
            return self._resolve(entries, len(entries)) + done, None
        return done, outcome.cls

    def _isolate(self, entries: list[Entry]) -> tuple[int, OutcomeClass | None]:
        """Bisect a rejected batch until each rejected op stands alone."""
        n = len(entries)
        pending: deque[tuple[int, int]] = deque([(0, n // 2), (n // 2, n)])
        done = 0
        while pending:
            # Bisection may take many requests: a stopping worker hands back what is left
            # (the next holder starts over on it), and a long one keeps its lease.
            if self.should_stop():
                self.store.clear_inflight(self.shard)  # a handover, not a crash
                return done, None
            if not self.store.renew(self.shard, self.token, lease_ms=self.settings.lease_ms):
                raise LeaseLost(self.shard.tag)
            start, stop = pending.popleft()
            part = entries[start:stop]
            outcome = self._send(part, batch_body([e.payload for e in part]), "v2")
            self.report.bisect_requests += 1
            metrics.bisect_request(self.shard.workspace)
            if outcome.cls is OutcomeClass.INVALID and len(part) > 1:
                mid = (start + stop) // 2
                pending.extendleft([(mid, stop), (start, mid)])
                continue
            done, blocked = self._settle(part, outcome, done)
            if blocked is not None:
                return done, blocked
        return done, None

    def exhausted(self, send: Send, *, reason: str) -> int:
        """The retry budget is spent: dead-letter the unit with every attempt's record."""
        retry = self.store.retry_state(self.shard)
        outcome = self.last_outcome
        self._dead_letter(
            send.entries,
            reason=reason,
            cls="transient",
            status=outcome.status if outcome else None,
            message=outcome.detail if outcome else "",
            attempts=retry.history,
        )
        return self._resolve(send.entries, send.count)

    def quarantine(self, entry: Entry, crashes: int) -> int:
        """A job that took its worker down `crashes` times leaves the queue."""
        log.error("quarantining %r of %s after %d crashes", entry.id, self.shard.tag, crashes)
        self._dead_letter(
            [entry],
            reason="crash_loop",
            cls="crash",
            message=f"worker died {crashes} times while delivering this job",
        )
        return self._resolve([entry], 1)

    def _resolve(self, entries: list[Entry], count: int) -> int:
        removed = self.store.resolve(self.shard, self.token, entries[count - 1].id)
        if removed < 0:
            raise LeaseLost(self.shard.tag)
        if removed != count:
            log.error("resolved %d entries of %s, expected %d", removed, self.shard.tag, count)
        record_drained(self.store.redis, self.shard.workspace, count, self.settings)
        return count

    def _dead_letter(
        self,
        entries: list[Entry],
        *,
        reason: str,
        cls: str,
        status: int | None = None,
        message: str = "",
        field: str = "",
        attempts: tuple[tuple[int, str], ...] = (),
    ) -> None:
        now = self.now_ms()
        history = attempts or ((now, str(status) if status is not None else cls),)
        self.dead.add(
            self.shard.workspace,
            (
                DeadLetter(
                    kind=e.kind,
                    payload=e.payload,
                    source=f"{self.shard.workspace}:{self.shard.shard}:{e.id.decode()}",
                    reason=reason,
                    cls=cls,
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
        self.report.dead_lettered += len(entries)
