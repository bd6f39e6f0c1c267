"""One drain: lease a shard, send the heads it holds in requests, hand everything back.

A drain holds its shards for at most its budget, then hands them back (re-triggering
itself if work remains) so every shard gets its turn on few workers. It never sleeps:
when the heads should linger, back off or wait out a pause, it releases the leases and
schedules a trigger for the moment it may go on.

Linger is the workspace's: a request that is not full waits at most `linger_ms` from its
oldest op, whichever shards its ops come from. A drain that stops to linger leads the
workspace's *linger chain* (``keys.linger_chain``): until its re-trigger runs, small live
drains of other shards defer to it (stop ``covered``), since it will pack their ops
before their own linger runs out; so under steady traffic a workspace sends about one
request per linger window, not one per shard.

The App lane (sends and broadcast triggers) has no batch endpoint: each of its jobs is a
request of its own and takes one rate-limit slot, so its drains neither pack across
shards nor linger nor hand backlogs over; a shard's jobs go out in order under its lease.

Scheduling: a drain triggered by live traffic sends what is waiting; when it finds a
backlog (more than two full requests waiting, or a full request after a full request)
it hands it to the bulk queue, where drains run for the short `bulk_drain_budget_s`, so
a backlog (or bulk-marked jobs) never holds a worker process for long while live
triggers wait (`service.triggers`).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Mapping

from service import keys
from service.delivery.upstream import LaneClient
from service.errors import LeaseLost
from service.jobs import Lane, Traffic
from service.lanes.registry import LANES
from service.store.dead_letters import DeadLetterStore
from service.store.shards import FirstLook, ShardStore
from service.triggers import Triggers
from workers.drain.blocked import BlockPolicy
from workers.drain.heads import HeldShards, Interrupted, NextRequest, Quarantine, fills_alone
from workers.drain.pace import Pace
from workers.drain.report import DrainReport
from workers.drain.send import Delivered, Delivery, OutgoingUnit
from workers.drain.settings import DrainerSettings
from workers.drain.stop import StopReason

log = logging.getLogger("cioq.drain")


class Drainer:
    """Drains shards for one process; collaborators are injected for tests."""

    def __init__(
        self,
        settings: DrainerSettings,
        store: ShardStore,
        dead: DeadLetterStore,
        clients: Mapping[tuple[str, Lane], LaneClient],
        triggers: Triggers | None,
        *,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.drain_settings = settings.drain
        self.queue_settings = settings.queue
        self.metrics_settings = settings.metrics
        self.sent_index = settings.sent_index
        self.limits = settings.limits
        self.store = store
        self.dead = dead
        self.clients = clients
        self.triggers = triggers
        self.clock = clock
        self.rng = rng
        self.should_stop = should_stop
        self.policy = BlockPolicy(settings.retry, store, self.now_ms, rng)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _packs_across(self, lane: Lane) -> bool:
        """Whether drains of `lane` pack other shards' heads (a lane that batches)."""
        return self.drain_settings.pack_across_shards and LANES[lane].batches

    def drain(
        self,
        workspace: str,
        shard: int,
        lane: Lane,
        traffic: Traffic = Traffic.LIVE,
        *,
        bulk: bool = False,
    ) -> DrainReport:
        """Deliver the backlog until it is empty, blocked, or the budget is spent."""
        report = DrainReport(workspace, shard, lane, traffic, bulk or traffic is Traffic.BULK)
        primary = keys.shard_keys(workspace, shard, lane, traffic)
        if self._covered(primary, report):
            report.stop(StopReason.COVERED)
            return report
        lease, look = self.store.acquire_and_look(
            primary,
            lease_ms=self.drain_settings.lease_ms,
            count=self.queue_settings.max_ops_per_read,
            pause_key=keys.pause(workspace, lane),
        )
        if lease is None:
            report.stop(StopReason.BUSY)
            return report
        limits = self.limits[lane]
        held = HeldShards(
            self.store,
            self.queue_settings,
            self.drain_settings,
            limits,
            lease,
            self.now_ms,
            self.rng,
        )
        if look is not None:
            held.prime(look)
        delivery = Delivery(
            workspace,
            lane,
            self.store,
            held.leases,
            self.dead,
            self.clients[(workspace, lane)],
            limits,
            self.metrics_settings,
            self.now_ms,
            should_stop=self.should_stop,
            sent_index=self.sent_index,
            max_ops=self.queue_settings.max_ops_per_read,
        )
        try:
            self._loop(held, delivery, report, look)
        except LeaseLost as lost:
            report.stop(StopReason.LEASE_LOST)
            log.warning("lease lost on %s; another drain owns the shard", lost)
        finally:
            report.add(delivery.counts)
            report.shards_held = len(held.leases)
            self._hand_back(held, report, delivery.released)
        return report

    def _covered(self, primary: keys.ShardKeys, report: DrainReport) -> bool:
        """Whether another shard's drain lingers for the workspace and will pack ours.

        Only a small live drain defers: a backlog (its head fills a request alone, or it
        came from the bulk queue) is drained by its own drain, in parallel. A deferring
        drain takes no lease (the lingering drain must find the shard free) and keeps the
        shard's trigger marker while the chain runs, so writes meanwhile send no trigger.
        """
        if report.bulk or not self._packs_across(primary.lane):
            return False
        chain = self.store.linger_chain(primary.workspace, primary.lane, primary.traffic)
        if chain is None or chain[0] == primary.shard:
            return False
        max_ops = self.queue_settings.max_ops_per_read
        if self.store.look([primary])[0].length >= max_ops:
            return False
        head = self.store.read(primary, after=None, count=max_ops)
        if fills_alone(head, max_ops, self.limits[primary.lane]):
            return False
        self.store.hold_marker(primary, chain[1] + self.queue_settings.trigger_ttl_ms)
        return True

    def _held_back(
        self,
        held: HeldShards,
        report: DrainReport,
        pace: Pace,
        *,
        check_retry: bool,
        look: FirstLook | None = None,
    ) -> bool:
        """Stop the drain when it must not send now: stopping, paused, backing off.
        `look`: the pause and retry state read with the lease (the first time round)."""
        if self.should_stop():
            report.stop(StopReason.SHUTDOWN)
            return True
        if look is not None:
            pace.pause_check_due()  # read with the lease: the next look is a pace away
            if look.pause_ms:
                report.stop(StopReason.PAUSED, look.pause_ms / 1000)
                return True
        elif pace.pause_check_due() and self._paused(held, report):
            return True
        if check_retry:
            # Only until the first resolve: every resolve clears the shard's retry state.
            retry = look.retry if look is not None else self.store.retry_state(held.primary)
            not_before_ms = retry.not_before_ms
            now_ms = self.now_ms()
            if not_before_ms > now_ms:
                report.stop(StopReason.BACKOFF, (not_before_ms - now_ms) / 1000)
                return True
        return False

    def _paused(self, held: HeldShards, report: DrainReport) -> bool:
        paused_ms = self.store.pause_remaining_ms(held.primary.workspace, held.primary.lane)
        if paused_ms:
            report.stop(StopReason.PAUSED, paused_ms / 1000)
        return bool(paused_ms)

    def _stops_before_send(
        self, held: HeldShards, report: DrainReport, deadline: float, *, batches: bool
    ) -> bool:
        if self.clock() >= deadline:
            report.stop(StopReason.BUDGET, 0.0)
            return True
        # A throttled drain sets its pause before it releases its shards, so a drain that
        # has just gathered them sees the pause here: a batch costs one GET more, and the
        # throttled ops are never sent again before Retry-After is over.
        return batches and self._paused(held, report)

    def _loop(
        self,
        held: HeldShards,
        delivery: Delivery,
        report: DrainReport,
        look: FirstLook | None = None,
    ) -> None:
        s = self.drain_settings
        budget_s = s.bulk_drain_budget_s if report.bulk else s.drain_budget_s
        deadline = self.clock() + budget_s
        batches = LANES[held.primary.lane].batches
        packs = self._packs_across(held.primary.lane)
        sent = sent_full = False
        pace = Pace(self.clock, s.lease_ms / 1000)
        while True:
            if self._held_back(held, report, pace, check_retry=not sent, look=look):
                return
            look = None
            now_ms = self.now_ms()
            held.refresh()
            if batches:
                held.survey()
                # A live drain sends once before it hands a backlog over: if every worker
                # is busy with live triggers, the bulk queue never runs, and a hand-over
                # without a send left the lane where it was. Not when its head outwaited
                # the trigger marker: the trigger is a leftover of a time the workers were
                # down or behind, and after an outage one send per such trigger held the
                # live events behind them for seconds (issue 27).
                if not report.bulk and held.backlog and (sent or self._late(held, now_ms)):
                    return report.stop(StopReason.BACKLOG, 0.0)
            if packs:
                held.gather()
            step = held.next_step()
            if step is None:
                return report.stop(StopReason.EMPTY)
            if isinstance(step, Quarantine | Interrupted):
                held.advance(_set_aside(delivery, step).resolved, delivery.take_peeked())
                continue
            unit = step.unit
            age_ms = now_ms - min(e.accepted_ms for e in unit.entries)
            linger_ms = self.queue_settings.linger_ms
            if not unit.full and age_ms < linger_ms:
                return report.stop(StopReason.LINGER, (linger_ms - age_ms) / 1000)
            if batches and not report.bulk and sent_full and unit.full:
                return report.stop(StopReason.BACKLOG, 0.0)
            if self._stops_before_send(held, report, deadline, batches=batches):
                return
            if pace.renew_due():
                held.renew()
            _before_send(held, delivery, step)
            result = delivery.deliver(unit)
            if result.blocked is not None:
                # Only what is still queued: a bisection may have resolved a part already,
                # and exhaustion must not dead-letter ops that were delivered.
                rest = _unresolved(unit, result.resolved)
                blocked = self.policy.apply(delivery, rest, result.blocked)
                return report.stop(blocked.reason, blocked.retrigger_s)
            held.advance(result.resolved, delivery.take_peeked())
            sent, sent_full = True, unit.full

    def _late(self, held: HeldShards, now_ms: int) -> bool:
        """Whether the primary's head has waited longer than a trigger marker lives."""
        head = held.buffers[held.primary]
        return bool(head) and now_ms - head[0].accepted_ms > self.queue_settings.trigger_ttl_ms

    def _hand_back(
        self, held: HeldShards, report: DrainReport, released: set[keys.ShardKeys]
    ) -> None:
        """Release every lease and schedule the triggers the remaining work needs.

        While the drain lingers (or only used up its budget), its own re-trigger will pack
        the other shards again, so they keep their trigger markers as long as it does and
        writes to them send no triggers meanwhile (under steady traffic one trigger per
        linger window per workspace, not one per shard). Otherwise each shard left with
        work gets a trigger of its own.
        """
        countdown_s = report.countdown_s
        packs_again = report.packs_again
        marker_ms = self._marker_ms(countdown_s)
        primary = held.primary
        packs_across = self._packs_across(primary.lane)
        if packs_again and not report.bulk and packs_across:
            self.store.set_linger_chain(primary, duration_ms=marker_ms)
        elif report.stopped is not StopReason.LEASE_LOST and packs_across:
            # Only a lane that packs across shards ever starts a chain (the App lanes not).
            self.store.end_linger_chain(primary)
        remaining = held.release(marker_ms=marker_ms, cover=packs_again, released=released)
        if report.stopped in (StopReason.EMPTY, StopReason.SHUTDOWN) and remaining[held.primary]:
            report.retrigger_s = countdown_s = 0.0
        if countdown_s is not None:
            self._trigger(held.primary, countdown_s, bulk=report.retrigger_bulk)
        if not packs_again:
            for shard, left in remaining.items():
                if left and shard != held.primary:
                    self._trigger(shard, 0.0, bulk=False)
        for shard in held.backlogged:
            self._trigger(shard, 0.0, bulk=True)

    def _marker_ms(self, countdown_s: float | None) -> int:
        """How long the trigger marker outlives a drain that re-triggers itself, else 0.

        Cleared, every write after the release and every sweep would send a trigger of its
        own; under steady load each drain that stopped to linger then begot two more, and
        the drain queue grew faster than the workers emptied it.
        """
        if countdown_s is None or self.triggers is None:
            return 0
        return int(countdown_s * 1000) + self.queue_settings.trigger_ttl_ms

    def _trigger(self, shard: keys.ShardKeys, countdown_s: float, *, bulk: bool) -> None:
        if self.triggers is None:
            return
        try:
            self.triggers.send(
                shard.workspace,
                shard.shard,
                lane=shard.lane,
                traffic=shard.traffic,
                bulk=bulk,
                countdown_s=countdown_s,
            )
        except Exception:  # the sweeper re-sends triggers for any shard with backlog
            log.warning("could not re-trigger %s", shard.tag, exc_info=True)


def _before_send(held: HeldShards, delivery: Delivery, step: NextRequest) -> None:
    """Note the send in each shard (with a lone job's rate slot); or, for a job the api
    sent and left its answer to settle, hand the answer to the lane's client."""
    if step.answer is not None:
        delivery.answered(step.unit, step.answer)
        return
    slot = delivery.slot_request(step.unit)
    for shard, note in step.notes.items():
        held.leases[shard].mark_inflight(note, slot=slot)
        held.noted(shard, note)


def _unresolved(unit: OutgoingUnit, resolved: dict[keys.ShardKeys, int]) -> OutgoingUnit:
    """`unit` without the head entries of each shard that were already resolved."""
    if not resolved:
        return unit
    seen: dict[keys.ShardKeys, int] = {}
    rest = []
    for entry in unit.entries:
        seen[entry.shard] = seen.get(entry.shard, 0) + 1
        if seen[entry.shard] > resolved.get(entry.shard, 0):
            rest.append(entry)
    return dataclasses.replace(unit, entries=rest, origin=())


def _set_aside(delivery: Delivery, step: Quarantine | Interrupted) -> Delivered:
    """Resolve a head that must not be sent: it killed workers, or its send was cut off."""
    if isinstance(step, Quarantine):
        return delivery.quarantine(step.entry, step.crashes)
    return delivery.interrupted(step.entry)
