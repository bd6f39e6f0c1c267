"""What a drain does when an outcome stops delivery: deferred, throttle, setup, or transient.

Pauses are per workspace *and lane*: each lane has its own credentials and limits
upstream, so a Pipelines 401 leaves the workspace's Track jobs flowing. A 429
(throttle) pauses the whole workspace lane on every worker, for Customer.io's
``Retry-After`` or, without one, a jittered `throttle_pause_ms`: the limit is the
workspace's, so no shard of it may go on. A 401/403 (setup) pauses the workspace for
`setup_pause_ms` and logs loudly: nothing can succeed until an operator fixes the
credentials or URL, and the jobs are kept; the next drain after the pause is the probe.
Anything else (408, 5xx, timeouts, connection errors) is transient: every shard of the
request backs off, for ``Retry-After`` or full-jitter exponential backoff, and the
attempt is recorded against each shard's head (a backing-off shard is never packed into
another drain's request meanwhile); a shard whose head has used `retry_max_attempts`
attempts or is older than `retry_max_age_s` has its part of the request dead-lettered
with every attempt's record, and moves on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from service.config import RetrySettings
from service.delivery.backoff import backoff_ms
from service.delivery.outcomes import Outcome, OutcomeClass
from service.metrics import definitions as metrics
from service.store.dead_letters import LetterReason
from service.store.shards import PauseCause, ShardStore
from workers.drain.send import Delivery, OutgoingUnit
from workers.drain.stop import StopReason

log = logging.getLogger("cioq.drain")


@dataclass(frozen=True, slots=True)
class Blocked:
    """How a blocked drain stops: rate limited, throttled, setup, backoff or exhausted."""

    reason: StopReason
    retrigger_s: float


class BlockPolicy:
    def __init__(
        self,
        retry: RetrySettings,
        store: ShardStore,
        now_ms: Callable[[], int],
        rng: Callable[[], float],
    ) -> None:
        self.retry = retry
        self.store = store
        self.now_ms = now_ms
        self.rng = rng

    def apply(self, delivery: Delivery, unit: OutgoingUnit, outcome: Outcome) -> Blocked:
        if outcome.outcome_class is OutcomeClass.DEFERRED:
            # App lane: no rate-limit slot soon enough. Nothing was sent, so no attempt
            # is recorded; the shard waits for its slot.
            self._clear_inflight(delivery, unit)
            return Blocked(StopReason.RATE_LIMITED, outcome.retry_after_s or 0.0)
        if outcome.outcome_class is OutcomeClass.THROTTLE:
            return self._throttle(delivery, unit, outcome)
        if outcome.outcome_class is OutcomeClass.SETUP:
            return self._pause_setup(delivery, unit, outcome)
        return self._back_off_or_exhaust(delivery, unit, outcome)

    def _throttle(self, delivery: Delivery, unit: OutgoingUnit, outcome: Outcome) -> Blocked:
        s = self.retry
        if outcome.retry_after_s is not None:
            wait_ms = int(outcome.retry_after_s * 1000)
        else:
            jittered = backoff_ms(
                2, base_ms=s.throttle_pause_ms, cap_ms=s.retry_cap_ms, rng=self.rng
            )
            wait_ms = jittered or s.throttle_pause_ms
        workspace, lane = delivery.workspace, delivery.lane
        cause = PauseCause.THROTTLE
        self.store.pause(workspace, cause=cause.stored(), duration_ms=wait_ms, lane=lane)
        metrics.paused(workspace, cause, lane)
        self._clear_inflight(delivery, unit)
        return Blocked(StopReason.THROTTLED, wait_ms / 1000)

    def _pause_setup(self, delivery: Delivery, unit: OutgoingUnit, outcome: Outcome) -> Blocked:
        s = self.retry
        workspace, lane = delivery.workspace, delivery.lane
        log.error(
            "Customer.io refused workspace %r %s credentials or URL (status %s: %s); "
            "delivery paused for %d ms, jobs kept",
            workspace,
            lane,
            outcome.status,
            outcome.detail,
            s.setup_pause_ms,
        )
        cause = PauseCause.SETUP.stored(outcome.status)
        self.store.pause(workspace, cause=cause, duration_ms=s.setup_pause_ms, lane=lane)
        metrics.paused(workspace, PauseCause.SETUP, lane)
        self._clear_inflight(delivery, unit)
        return Blocked(StopReason.SETUP, s.setup_pause_ms / 1000)

    def _back_off_or_exhaust(
        self, delivery: Delivery, unit: OutgoingUnit, outcome: Outcome
    ) -> Blocked:
        s = self.retry
        now_ms = self.now_ms()
        parts = unit.by_shard()
        retries = {shard: self.store.retry_state(shard) for shard in parts}
        attempt = 1 + max(
            (retry.attempts if retry.head == parts[shard][0].id else 0)
            for shard, retry in retries.items()
        )
        if outcome.retry_after_s is not None:
            wait_ms = int(outcome.retry_after_s * 1000)
        else:
            wait_ms = backoff_ms(
                attempt, base_ms=s.retry_base_ms, cap_ms=s.retry_cap_ms, rng=self.rng
            )
        label = outcome.status_class if outcome.status is None else str(outcome.status)
        backing_off = False
        for shard, entries in parts.items():
            head = entries[0]
            attempts = delivery.leases[shard].record_attempt(
                head=head.id, now_ms=now_ms, not_before_ms=now_ms + wait_ms, label=label
            )
            too_old = now_ms - head.accepted_ms >= s.retry_max_age_s * 1000
            if attempts >= s.retry_max_attempts or too_old:
                reason = LetterReason.MAX_AGE if too_old else LetterReason.MAX_ATTEMPTS
                delivery.exhausted(entries, outcome, reason=reason)
            else:
                backing_off = True
        if not backing_off:
            return Blocked(StopReason.EXHAUSTED, 0.0)
        metrics.retry_scheduled(delivery.workspace, outcome.status_class)
        return Blocked(StopReason.BACKOFF, wait_ms / 1000)

    def _clear_inflight(self, delivery: Delivery, unit: OutgoingUnit) -> None:
        # The send got an answer: nothing died, so crash search has nothing to find. Fenced:
        # a drain that lost its lease must not erase the next holder's note (LeaseLost).
        for shard in unit.by_shard():
            delivery.leases[shard].clear_inflight()
