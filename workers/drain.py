"""Draining one shard: lease it, send its head in batches, resolve what came back.

A drain holds the shard's lease for at most `drain_budget_s`, then hands the shard
back (re-triggering it if work remains) so every shard gets its turn on few workers.
It never sleeps: when the head should linger, back off or wait out a pause, it
releases the lease and schedules a trigger for the moment the shard may go on.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from service import keys
from service.config import Settings
from service.delivery.backoff import backoff_ms
from service.delivery.crash_search import InflightNote, next_send
from service.delivery.outcomes import Outcome, OutcomeClass
from service.delivery.packing import Oversize, batch_body, first_unit
from service.errors import LeaseLost
from service.lanes import Lane
from service.lanes.registry import LANES, BatchClient
from service.lanes.track.coalesce import coalesce_batch
from service.metrics import definitions as metrics
from service.store.dead_letters import DeadLetterStore
from service.store.shards import Entry, Lease, RetryState, ShardStore
from service.triggers import Triggers
from workers.send import Delivery, DeliveryCounts, OutgoingUnit

log = logging.getLogger("cioq.drain")

#: Celery holds ETA triggers in memory; far-future ones are left to the sweeper.
MAX_COUNTDOWN_S = 60.0
#: How often a running drain looks for a pause set by another worker.
PAUSE_CHECK_S = 0.1


class StopReason(StrEnum):
    """Why a drain handed its shard back; also the bounded ``stopped`` metrics label."""

    BUSY = "busy"  # another drain holds the lease
    EMPTY = "empty"
    LINGER = "linger"  # the head may wait for more ops
    BUDGET = "budget"  # drain_budget_s spent; handed back for fairness
    PAUSED = "paused"  # the workspace is paused (by another drain or an operator)
    BACKOFF = "backoff"
    THROTTLED = "throttled"
    SETUP = "setup"
    EXHAUSTED = "exhausted"
    SHUTDOWN = "shutdown"
    LEASE_LOST = "lease_lost"
    RATE_LIMITED = "rate_limited"  # App lane: no rate-limit slot soon enough


@dataclass
class DrainReport:
    """What one drain did, for logs, metrics and tests."""

    workspace: str
    shard: int
    lane: Lane = Lane.TRACK
    stopped: StopReason | None = None
    requests: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    bisect_requests: int = 0
    retrigger_s: float | None = None

    def stop(self, reason: StopReason, retrigger_s: float | None = None) -> None:
        self.stopped, self.retrigger_s = reason, retrigger_s

    def add(self, counts: DeliveryCounts) -> None:
        self.requests += counts.requests
        self.delivered += counts.delivered
        self.dead_lettered += counts.dead_lettered
        self.bisect_requests += counts.bisect_requests


class Drainer:
    """Drains shards for one process; collaborators are injected for tests."""

    def __init__(
        self,
        settings: Settings,
        store: ShardStore,
        dead: DeadLetterStore,
        clients: Mapping[tuple[str, Lane], BatchClient],
        triggers: Triggers | None,
        *,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self.store = store
        self.dead = dead
        self.clients = clients
        self.triggers = triggers
        self.clock = clock
        self.rng = rng
        self.should_stop = should_stop

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def drain(self, workspace: str, shard: int, lane: Lane = Lane.TRACK) -> DrainReport:
        """Deliver the shard's backlog until it is empty, blocked, or the budget is spent."""
        report = DrainReport(workspace, shard, lane)
        shard_keys = keys.shard_keys(workspace, shard, lane)
        lease = self.store.acquire(shard_keys, lease_ms=self.settings.lease_ms)
        if lease is None:
            report.stop(StopReason.BUSY)
            return report
        delivery = Delivery(
            lease,
            self.dead,
            self.clients[(workspace, lane)],
            self.settings,
            self.now_ms,
            should_stop=self.should_stop,
        )
        try:
            self._loop(delivery, report)
        except LeaseLost:
            report.stop(StopReason.LEASE_LOST)
            log.warning("lease lost on %s; another drain owns the shard", shard_keys.tag)
        finally:
            report.add(delivery.counts)
            remaining = lease.release(marker_ms=self._marker_ms(report))
            if report.stopped in (StopReason.EMPTY, StopReason.SHUTDOWN) and remaining:
                report.retrigger_s = 0.0
            self._retrigger(report)
        return report

    def _loop(self, delivery: Delivery, report: DrainReport) -> None:
        s = self.settings
        lease = delivery.lease
        shard = lease.shard
        deadline = self.clock() + s.drain_budget_s
        buffer: list[Entry] = []
        retry = self.store.retry_state(shard)
        # Read once: afterwards the stored note is the one this drain last wrote.
        note = self.store.inflight_note(shard)
        # Lone App API sends make every round trip count: the lease is renewed once a
        # third of it has passed (every write is fenced anyway), and another worker's
        # pause is looked for at most every PAUSE_CHECK_S (a few sends more at worst,
        # each answered 429 again and so resent).
        renewed_s, paused_checked_s = self.clock(), float("-inf")
        while True:
            if self.should_stop():
                return report.stop(StopReason.SHUTDOWN)
            if self.clock() - paused_checked_s >= PAUSE_CHECK_S:
                paused_checked_s = self.clock()
                paused_ms = self.store.pause_remaining_ms(shard.workspace, shard.lane)
                if paused_ms:
                    return report.stop(StopReason.PAUSED, paused_ms / 1000)
            now_ms = self.now_ms()
            if retry.not_before_ms > now_ms:
                return report.stop(StopReason.BACKOFF, (retry.not_before_ms - now_ms) / 1000)
            if len(buffer) < s.max_ops_per_read:
                after = buffer[-1].id if buffer else None
                buffer += self.store.read(
                    shard, after=after, count=s.max_ops_per_read - len(buffer)
                )
            if not buffer:
                return report.stop(StopReason.EMPTY)
            unit = self._plan(buffer, shard.lane)
            age_ms = now_ms - buffer[0].accepted_ms
            if not unit.full and age_ms < s.linger_ms:
                return report.stop(StopReason.LINGER, (s.linger_ms - age_ms) / 1000)
            if self.clock() >= deadline:
                return report.stop(StopReason.BUDGET, 0.0)
            if self.clock() - renewed_s >= s.lease_ms / 3000:
                lease.renew()
                renewed_s = self.clock()
            if unit.kind == "app" and note.head == buffer[0].id:
                # A send of this very job started and never came back: never resent.
                buffer = buffer[delivery.interrupted(buffer[0]) :]
                note = InflightNote()
                continue
            unit_or_none, note = self._crash_checked(lease, buffer, unit, note)
            if unit_or_none is None:
                resolved = delivery.quarantine(buffer[0], s.crash_limit)
            else:
                result = delivery.deliver(unit_or_none)
                if result.blocked is not None:
                    return self._block(delivery, buffer[0], unit_or_none, result.blocked, report)
                resolved = result.resolved
            buffer = buffer[resolved:]
            # Every resolve moved the head on and cleared the shard's retry state.
            retry = _NO_RETRY

    def _crash_checked(
        self, lease: Lease, buffer: list[Entry], unit: OutgoingUnit, stored: InflightNote
    ) -> tuple[OutgoingUnit | None, InflightNote]:
        """`unit`, cut down if an earlier send from this head died; None: quarantine the head.

        The note of what goes out is stored before the send, so the next holder can tell
        a send that died without an outcome (`service.delivery.crash_search`).
        """
        shard = lease.shard
        note = next_send(
            stored,
            [e.id for e in buffer],
            unit.count,
            crash_limit=self.settings.crash_limit,
        )
        if note is None:
            return None, stored
        if note.count < unit.count:
            log.warning(
                "%s: a send from %r died without an outcome; sending %d of %d ops",
                shard.tag,
                buffer[0].id,
                note.count,
                unit.count,
            )
            unit = self._plan(buffer[: note.count], shard.lane)
            note = replace(note, count=unit.count)
        lease.mark_inflight(note)
        return unit, note

    def _plan(self, buffer: list[Entry], lane: Lane) -> OutgoingUnit:
        """What goes out next: a lone v1 job, an oversize op, or the longest batch.

        A batch is the run of head entries of the head's kind (Track v2 ops, or Pipelines
        calls), packed under the lane's byte limits (`service.lanes.registry`).
        """
        s = self.settings
        spec = LANES[lane]
        head = buffer[0]
        if head.kind == "v1" or head.kind == "app":
            # Sent alone: a v1 request to its own path; an App API send or trigger (the
            # App lane has no batch endpoint, and each request takes one rate slot).
            return OutgoingUnit(entries=[head], body=head.payload, kind=head.kind, full=True)
        run: list[bytes] = []
        for entry in buffer:
            if entry.kind != head.kind:
                break
            run.append(entry.payload)
        unit = first_unit(
            run, max_batch_bytes=spec.max_batch_bytes(s), max_op_bytes=spec.max_item_bytes(s)
        )
        assert unit is not None
        if isinstance(unit, Oversize):
            return OutgoingUnit(entries=[head], body=head.payload, kind="oversize", full=True)
        full = unit.stop < len(run) or len(buffer) >= s.max_ops_per_read or len(run) < len(buffer)
        if head.kind == "cdp":
            return OutgoingUnit(buffer[: unit.stop], unit.body, "cdp", full)
        if s.coalesce:
            merged = coalesce_batch(run[: unit.stop], max_op_bytes=s.max_op_bytes)
            if merged.saved:
                body = batch_body(merged.ops)
                return OutgoingUnit(buffer[: unit.stop], body, "v2", full, origin=merged.origin)
        return OutgoingUnit(entries=buffer[: unit.stop], body=unit.body, kind="v2", full=full)

    def _block(
        self,
        delivery: Delivery,
        head: Entry,
        unit: OutgoingUnit,
        outcome: Outcome,
        report: DrainReport,
    ) -> None:
        """The head could not be resolved; the policy for what happens next.

        Pauses are per workspace *and lane*: each lane has its own credentials and limits
        upstream, so a Pipelines 401 leaves the workspace's Track jobs flowing.
        A 429 (throttle) pauses the whole workspace on every worker, for Customer.io's
        ``Retry-After`` or, without one, a jittered `throttle_pause_ms`: the limit is the
        workspace's, so no shard of it may go on. A 401/403 (setup) pauses the workspace
        for `setup_pause_ms` and logs loudly: nothing can succeed until an operator fixes
        the credentials or URL, and the jobs are kept; the next drain after the pause is
        the probe. Anything else (408, 5xx, timeouts, connection errors) is transient:
        only this shard backs off, for ``Retry-After`` or full-jitter exponential backoff,
        and the attempt is recorded against the head; once the head has used
        `retry_max_attempts` attempts or is older than `retry_max_age_s`, the unit is
        dead-lettered with every attempt's record and the shard moves on.
        """
        if outcome.outcome_class is OutcomeClass.DEFERRED:
            # Nothing was sent: no attempt is recorded; the shard waits for its slot.
            self.store.clear_inflight(delivery.shard)
            report.stop(StopReason.RATE_LIMITED, outcome.retry_after_s)
        elif outcome.outcome_class is OutcomeClass.THROTTLE:
            self._throttle(delivery, outcome, report)
        elif outcome.outcome_class is OutcomeClass.SETUP:
            self._pause_setup(delivery, outcome, report)
        else:
            self._back_off_or_exhaust(delivery, head, unit, outcome, report)

    def _throttle(self, delivery: Delivery, outcome: Outcome, report: DrainReport) -> None:
        s = self.settings
        if outcome.retry_after_s is not None:
            wait_ms = int(outcome.retry_after_s * 1000)
        else:
            jittered = backoff_ms(
                2, base_ms=s.throttle_pause_ms, cap_ms=s.retry_cap_ms, rng=self.rng
            )
            wait_ms = jittered or s.throttle_pause_ms
        workspace, lane = delivery.shard.workspace, delivery.shard.lane
        self.store.pause(workspace, cause="throttle", duration_ms=wait_ms, lane=lane)
        metrics.paused(workspace, "throttle", lane)
        self.store.clear_inflight(delivery.shard)
        report.stop(StopReason.THROTTLED, wait_ms / 1000)

    def _pause_setup(self, delivery: Delivery, outcome: Outcome, report: DrainReport) -> None:
        s = self.settings
        workspace, lane = delivery.shard.workspace, delivery.shard.lane
        log.error(
            "Customer.io refused workspace %r %s credentials or URL (status %s: %s); "
            "delivery paused for %d ms, jobs kept",
            workspace,
            lane,
            outcome.status,
            outcome.detail,
            s.setup_pause_ms,
        )
        cause = f"setup:{outcome.status}"
        self.store.pause(workspace, cause=cause, duration_ms=s.setup_pause_ms, lane=lane)
        metrics.paused(workspace, "setup", lane)
        self.store.clear_inflight(delivery.shard)
        report.stop(StopReason.SETUP, s.setup_pause_ms / 1000)

    def _back_off_or_exhaust(
        self,
        delivery: Delivery,
        head: Entry,
        unit: OutgoingUnit,
        outcome: Outcome,
        report: DrainReport,
    ) -> None:
        s = self.settings
        now_ms = self.now_ms()
        retry = self.store.retry_state(delivery.shard)
        attempt = (retry.attempts if retry.head == head.id else 0) + 1
        if outcome.retry_after_s is not None:
            wait_ms = int(outcome.retry_after_s * 1000)
        else:
            wait_ms = backoff_ms(
                attempt, base_ms=s.retry_base_ms, cap_ms=s.retry_cap_ms, rng=self.rng
            )
        attempts = delivery.lease.record_attempt(
            head=head.id,
            now_ms=now_ms,
            not_before_ms=now_ms + wait_ms,
            label=outcome.status_class if outcome.status is None else str(outcome.status),
        )
        too_old = now_ms - head.accepted_ms >= s.retry_max_age_s * 1000
        if attempts >= s.retry_max_attempts or too_old:
            delivery.exhausted(unit, outcome, reason="max_age" if too_old else "max_attempts")
            return report.stop(StopReason.EXHAUSTED, 0.0)
        metrics.retry_scheduled(delivery.shard.workspace, outcome.status_class)
        report.stop(StopReason.BACKOFF, wait_ms / 1000)

    def _marker_ms(self, report: DrainReport) -> int:
        """How long the trigger marker outlives a drain that re-triggers itself, else 0.

        Cleared, every write after the release and every sweep would send a trigger of its
        own; under steady load each drain that stopped to linger then begot two more, and
        the drain queue grew faster than the workers emptied it.
        """
        countdown_s = _countdown_s(report)
        if countdown_s is None or self.triggers is None:
            return 0
        return int(countdown_s * 1000) + self.settings.trigger_ttl_ms

    def _retrigger(self, report: DrainReport) -> None:
        countdown_s = _countdown_s(report)
        if countdown_s is None or self.triggers is None:
            return
        try:
            self.triggers.send(
                report.workspace, report.shard, lane=report.lane, countdown_s=countdown_s
            )
        except Exception:  # the sweeper re-sends triggers for any shard with backlog
            log.warning("could not re-trigger %s/%s", report.workspace, report.shard, exc_info=True)


def _countdown_s(report: DrainReport) -> float | None:
    """When the drain's own re-trigger is due, or None when it asked for none."""
    if report.retrigger_s is None:
        return None
    return min(max(report.retrigger_s, 0.0), MAX_COUNTDOWN_S)


_NO_RETRY = RetryState(head=None, attempts=0, first_ms=0, not_before_ms=0, history=())
