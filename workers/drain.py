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

from service import keys
from service.config import Settings
from service.delivery.backoff import backoff_ms
from service.delivery.client import TrackClient
from service.delivery.crash_search import next_send
from service.delivery.outcomes import OutcomeClass
from service.delivery.packing import Oversize, batch_body, first_unit
from service.lanes.track.coalesce import coalesce_batch
from service.metrics import definitions as metrics
from service.store.dead_letters import DeadLetterStore
from service.store.shards import Entry, RetryState, ShardStore
from service.triggers import Triggers
from workers.send import Delivery, LeaseLost, Send

log = logging.getLogger("cioq.drain")

#: Celery holds ETA triggers in memory; far-future ones are left to the sweeper.
MAX_COUNTDOWN_S = 60.0


@dataclass
class DrainReport:
    """What one drain did, for logs, metrics and tests."""

    workspace: str
    shard: int
    stopped: str = ""
    requests: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    bisect_requests: int = 0
    retrigger_s: float | None = None


class Drainer:
    """Drains shards for one process; collaborators are injected for tests."""

    def __init__(
        self,
        settings: Settings,
        store: ShardStore,
        dead: DeadLetterStore,
        clients: Mapping[str, TrackClient],
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

    def drain(self, workspace: str, shard: int) -> DrainReport:
        """Deliver the shard's backlog until it is empty, blocked, or the budget is spent."""
        report = DrainReport(workspace, shard)
        shard_keys = keys.shard_keys(workspace, shard)
        token = self.store.acquire(shard_keys, lease_ms=self.settings.lease_ms)
        if token is None:
            report.stopped = "busy"
            return report
        try:
            self._loop(shard_keys, token, report)
        except LeaseLost:
            report.stopped = "lease_lost"
            log.warning("lease lost on %s; another drain owns the shard", shard_keys.tag)
        finally:
            marker_ms = self._marker_ms(report)
            remaining = self.store.release(shard_keys, token, marker_ms=marker_ms)
            if report.stopped in ("empty", "shutdown") and remaining:
                report.retrigger_s = 0.0
            self._retrigger(report)
        return report

    def _loop(self, shard: keys.ShardKeys, token: int, report: DrainReport) -> None:
        s = self.settings
        client = self.clients[shard.workspace]
        delivery = Delivery(
            self.store,
            self.dead,
            shard,
            token,
            client,
            self.settings,
            self.now_ms,
            report,
            should_stop=self.should_stop,
        )
        deadline = self.clock() + s.drain_budget_s
        buffer: list[Entry] = []
        retry = self.store.retry_state(shard)
        while True:
            if self.should_stop():
                report.stopped = "shutdown"
                return
            paused_ms = self.store.pause_remaining_ms(shard.workspace)
            if paused_ms:
                report.stopped, report.retrigger_s = "paused", paused_ms / 1000
                return
            now_ms = self.now_ms()
            if retry.not_before_ms > now_ms:
                report.stopped = "backoff"
                report.retrigger_s = (retry.not_before_ms - now_ms) / 1000
                return
            if len(buffer) < s.max_ops_per_read:
                after = buffer[-1].id if buffer else None
                buffer += self.store.read(
                    shard, after=after, count=s.max_ops_per_read - len(buffer)
                )
            if not buffer:
                report.stopped = "empty"
                return
            send = self._plan(buffer)
            age_ms = now_ms - buffer[0].accepted_ms
            if not send.full and age_ms < s.linger_ms:
                report.stopped, report.retrigger_s = "linger", (s.linger_ms - age_ms) / 1000
                return
            if self.clock() >= deadline:
                report.stopped, report.retrigger_s = "budget", 0.0
                return
            if not self.store.renew(shard, token, lease_ms=s.lease_ms):
                raise LeaseLost(shard.tag)
            note = next_send(
                self.store.inflight_note(shard),
                [e.id for e in buffer],
                send.count,
                crash_limit=s.crash_limit,
            )
            if note is None:
                resolved = delivery.quarantine(buffer[0], s.crash_limit)
            else:
                if note.count < send.count:
                    log.warning(
                        "%s: a send from %r died without an outcome; sending %d of %d ops",
                        shard.tag,
                        buffer[0].id,
                        note.count,
                        send.count,
                    )
                    send = self._plan(buffer[: note.count])
                    note = replace(note, count=send.count)
                if not self.store.mark_inflight(shard, token, note):
                    raise LeaseLost(shard.tag)
                resolved, blocked = delivery.deliver(send)
                if blocked is not None:
                    self._block(shard, token, buffer, send, blocked, report, delivery)
                    return
            buffer = buffer[resolved:]
            # Every resolve moved the head on and cleared the shard's retry state.
            retry = _NO_RETRY

    def _plan(self, buffer: list[Entry]) -> Send:
        """What goes out next: a lone v1 job, an oversize op, or the longest v2 batch."""
        s = self.settings
        head = buffer[0]
        if head.kind == "v1":
            return Send(entries=[head], body=head.payload, kind="v1", full=True)
        run: list[bytes] = []
        for entry in buffer:
            if entry.kind != "v2":
                break
            run.append(entry.payload)
        unit = first_unit(run, max_batch_bytes=s.max_batch_bytes, max_op_bytes=s.max_op_bytes)
        assert unit is not None
        if isinstance(unit, Oversize):
            return Send(entries=[head], body=head.payload, kind="oversize", full=True)
        full = unit.stop < len(run) or len(buffer) >= s.max_ops_per_read or len(run) < len(buffer)
        if s.coalesce:
            merged = coalesce_batch(run[: unit.stop], max_op_bytes=s.max_op_bytes)
            if merged.saved:
                body = batch_body(merged.ops)
                return Send(buffer[: unit.stop], body, "v2", full, origin=merged.origin)
        return Send(entries=buffer[: unit.stop], body=unit.body, kind="v2", full=full)

    def _block(
        self,
        shard: keys.ShardKeys,
        token: int,
        buffer: list[Entry],
        send: Send,
        blocked: OutcomeClass,
        report: DrainReport,
        delivery: Delivery,
    ) -> None:
        """The head could not be resolved: back the shard off or pause the workspace."""
        s = self.settings
        outcome = delivery.last_outcome
        assert outcome is not None
        if blocked is OutcomeClass.THROTTLE:
            wait_ms = (
                int(outcome.retry_after_s * 1000)
                if outcome.retry_after_s is not None
                else backoff_ms(2, base_ms=s.throttle_pause_ms, cap_ms=s.retry_cap_ms, rng=self.rng)
                or s.throttle_pause_ms
            )
            self.store.pause(shard.workspace, cause="throttle", duration_ms=wait_ms)
            metrics.paused(shard.workspace, "throttle")
            self.store.clear_inflight(shard)
            report.stopped, report.retrigger_s = "throttled", wait_ms / 1000
            return
        if blocked is OutcomeClass.SETUP:
            log.error(
                "Customer.io refused workspace %r credentials or URL (status %s: %s); "
                "delivery paused for %d ms, jobs kept",
                shard.workspace,
                outcome.status,
                outcome.detail,
                s.setup_pause_ms,
            )
            self.store.pause(
                shard.workspace, cause=f"setup:{outcome.status}", duration_ms=s.setup_pause_ms
            )
            metrics.paused(shard.workspace, "setup")
            self.store.clear_inflight(shard)
            report.stopped, report.retrigger_s = "setup", s.setup_pause_ms / 1000
            return
        now_ms = self.now_ms()
        head = buffer[0]
        retry = self.store.retry_state(shard)
        attempt = (retry.attempts if retry.head == head.id else 0) + 1
        if outcome.retry_after_s is not None:
            wait_ms = int(outcome.retry_after_s * 1000)
        else:
            wait_ms = backoff_ms(
                attempt, base_ms=s.retry_base_ms, cap_ms=s.retry_cap_ms, rng=self.rng
            )
        attempts = self.store.record_attempt(
            shard,
            token,
            head=head.id,
            now_ms=now_ms,
            not_before_ms=now_ms + wait_ms,
            label=outcome.status_class if outcome.status is None else str(outcome.status),
        )
        if attempts < 0:
            raise LeaseLost(shard.tag)
        too_old = now_ms - head.accepted_ms >= s.retry_max_age_s * 1000
        if attempts >= s.retry_max_attempts or too_old:
            delivery.exhausted(send, reason="max_age" if too_old else "max_attempts")
            report.stopped, report.retrigger_s = "exhausted", 0.0
            return
        metrics.retry_scheduled(shard.workspace, outcome.status_class)
        report.stopped, report.retrigger_s = "backoff", wait_ms / 1000

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
            self.triggers.send(report.workspace, report.shard, countdown_s=countdown_s)
        except Exception:  # the sweeper re-sends triggers for any shard with backlog
            log.warning("could not re-trigger %s/%s", report.workspace, report.shard, exc_info=True)


def _countdown_s(report: DrainReport) -> float | None:
    """When the drain's own re-trigger is due, or None when it asked for none."""
    if report.retrigger_s is None:
        return None
    return min(max(report.retrigger_s, 0.0), MAX_COUNTDOWN_S)


_NO_RETRY = RetryState(head=None, attempts=0, first_ms=0, not_before_ms=0, history=())
