"""What one drain did, and what its stop asks of the next: a re-trigger, and on which queue."""

from __future__ import annotations

from dataclasses import dataclass

from service.jobs import Lane, Traffic
from workers.drain.send import DeliveryCounts
from workers.drain.stop import StopReason

#: Celery holds ETA triggers in memory; far-future ones are left to the sweeper.
MAX_COUNTDOWN_S = 60.0


@dataclass
class DrainReport:
    """What one drain did, for logs, metrics and tests."""

    workspace: str
    shard: int
    lane: Lane
    traffic: Traffic = Traffic.LIVE
    #: Triggered from the bulk queue: runs on `bulk_drain_budget_s`.
    bulk: bool = False
    stopped: StopReason | None = None
    requests: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    bisect_requests: int = 0
    #: How many shards the drain held at its end (1: it packed only its own).
    shards_held: int = 0
    retrigger_s: float | None = None

    def stop(self, reason: StopReason, retrigger_s: float | None = None) -> None:
        self.stopped, self.retrigger_s = reason, retrigger_s

    def add(self, counts: DeliveryCounts) -> None:
        self.requests += counts.requests
        self.delivered += counts.delivered
        self.dead_lettered += counts.dead_lettered
        self.bisect_requests += counts.bisect_requests

    @property
    def retrigger_bulk(self) -> bool:
        """Whether the re-trigger goes to the bulk queue: the shards hold a backlog."""
        if self.traffic is Traffic.BULK or self.stopped is StopReason.BACKLOG:
            return True
        return self.bulk and self.stopped is StopReason.BUDGET

    @property
    def packs_again(self) -> bool:
        """Whether the drain's own re-trigger comes soon and will pack the other shards."""
        return self.stopped in (StopReason.LINGER, StopReason.BUDGET)

    @property
    def countdown_s(self) -> float | None:
        """When the drain's own re-trigger is due, or None when it asked for none."""
        if self.retrigger_s is None:
            return None
        return min(max(self.retrigger_s, 0.0), MAX_COUNTDOWN_S)
