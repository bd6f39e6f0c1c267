"""The operator's overview of each workspace lane, shared by the console and ``cioq status``.

Queue numbers come from `QueueStateCollector.read` (what ``/metrics`` exports), the
per-minute counts of accepted, delivered and dead-lettered jobs and of upstream answers
from `service.metrics.activity`, and the manual-pause note from `WorkspaceControl`. Every
figure is the lane's own: its streams' oldest job, its counts, the dead letters of its jobs
(a workspace keeps one dead-letter stream; a letter's lane is its job's), and the late
failures tied to its jobs (`service.store.late_failures`).

Counting dead letters by class reads the whole stream, so the count is kept and reused
while the stream's length and newest id are unchanged (any XADD or XDEL changes one).
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from service.config import Workspace, ingest_key_entries
from service.errors import StoreUnavailable
from service.jobs import UNKNOWN_PRODUCER
from service.metrics.activity import lane_activity, per_minute, producers_activity
from service.metrics.queue_state import QueueStateCollector, WorkspaceState
from service.store.connections import AsyncStore, store_errors
from service.store.dead_letter_admin import DeadLetterAdmin, DeadLetterFilter
from service.store.late_failures import late_by_lane, late_by_producer
from service.store.shards import PauseCause
from service.store.workspace_control import WorkspaceControl

#: How the drain's pause causes read to an operator.
PAUSE_LABELS: dict[str, str] = {
    PauseCause.THROTTLE: "429 from Customer.io",
    PauseCause.SETUP: "credentials refused (401/403)",
    PauseCause.MANUAL: "paused by hand",
    PauseCause.OTHER: "paused",
}


@dataclass(frozen=True, slots=True)
class LaneOverview:
    workspace: str
    lane: str
    waiting: int
    oldest_age_s: float
    accepted_per_min: float
    delivered_per_min: float
    dead_lettered_per_min: float
    paused: str
    pause_reason: str
    pause_by: str
    pause_remaining_s: float
    dead_letters: int
    dead_by_class: dict[str, int] = field(default_factory=dict)
    dead_by_status: dict[str, int] = field(default_factory=dict)
    upstream_per_min: dict[str, float] = field(default_factory=dict)
    #: Late failures recorded, ever, tied to this lane's jobs (docs/late-failures.md).
    late_failures: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "workspace": self.workspace,
            "lane": self.lane,
            "waiting": self.waiting,
            "oldest_age_s": round(self.oldest_age_s, 1),
            "accepted_per_min": round(self.accepted_per_min, 1),
            "delivered_per_min": round(self.delivered_per_min, 1),
            "dead_lettered_per_min": round(self.dead_lettered_per_min, 1),
            "paused": self.paused,
            "pause_label": PAUSE_LABELS.get(self.paused, "") if self.paused else "",
            "pause_reason": self.pause_reason,
            "pause_by": self.pause_by,
            "pause_remaining_s": round(self.pause_remaining_s, 1),
            "dead_letters": self.dead_letters,
            "dead_by_class": self.dead_by_class,
            "dead_by_status": self.dead_by_status,
            "upstream_per_min": {k: round(v, 1) for k, v in self.upstream_per_min.items()},
            "late_failures": self.late_failures,
        }


@dataclass(frozen=True, slots=True)
class ProducerOverview:
    """One producer's share of a workspace: its per-minute counts and its dead letters."""

    workspace: str
    producer: str
    accepted_per_min: float
    delivered_per_min: float
    dead_lettered_per_min: float
    dead_letters: int
    #: Late failures recorded, ever, tied to this producer's jobs.
    late_failures: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "workspace": self.workspace,
            "producer": self.producer,
            "late_failures": self.late_failures,
            "accepted_per_min": round(self.accepted_per_min, 1),
            "delivered_per_min": round(self.delivered_per_min, 1),
            "dead_lettered_per_min": round(self.dead_lettered_per_min, 1),
            "dead_letters": self.dead_letters,
        }


class Overview:
    """Reads every workspace lane's overview; one instance per process keeps the DLQ cache."""

    def __init__(
        self,
        workspaces: tuple[Workspace, ...],
        state: QueueStateCollector,
        client: AsyncStore,
        dlq: DeadLetterAdmin,
        control: WorkspaceControl,
    ) -> None:
        self.workspaces = workspaces
        self.state = state
        self.redis = client
        self.dlq = dlq
        self.control = control
        self._dead_cache: dict[str, tuple[Any, dict[str, _LaneLetters]]] = {}
        self._dead_producers: dict[str, Counter[str]] = {}

    async def producers(self) -> list[ProducerOverview]:
        """Each workspace's producers: those its keys name, then any others seen (jobs
        stored without one count as ``unknown``), with their counts and dead letters."""
        rows: list[ProducerOverview] = []
        for ws in self.workspaces:
            with store_errors("activity"):
                counts = producers_activity(await per_minute(self.redis, ws.name))
            await self._dead_counts(ws.name)
            dead = self._dead_producers.get(ws.name, Counter())
            late = await late_by_producer(self.redis, ws.name)
            named = dict.fromkeys(entry.producer for entry in ingest_key_entries(ws))
            for producer in (*named, *sorted((set(counts) | set(dead)) - set(named))):
                mine = counts.get(producer, {})
                rows.append(
                    ProducerOverview(
                        ws.name,
                        producer,
                        mine.get("accepted", 0.0),
                        mine.get("delivered", 0.0),
                        mine.get("dead_lettered", 0.0),
                        dead.get(producer, 0),
                        late.get(producer, 0),
                    )
                )
        return rows

    async def read(self) -> list[LaneOverview]:
        rows: list[LaneOverview] = []
        for ws in self.workspaces:
            # One read of the workspace's queue state and counts serves all its lanes.
            try:
                state = await asyncio.to_thread(self.state.read, ws.name)
            except Exception as exc:  # redis-py raises RedisError subclasses and OSError here
                raise StoreUnavailable(f"queue state: {exc}") from exc
            with store_errors("activity"):
                counts = await per_minute(self.redis, ws.name)
            late = await late_by_lane(self.redis, ws.name)
            for lane in ws.lanes:  # Pipelines only where the workspace has a write key
                row = await self._lane(state, lane.value, counts)
                rows.append(replace(row, late_failures=late.get(lane.value, 0)))
        return rows

    async def _lane(
        self, state: WorkspaceState, lane: str, counts: dict[str, float]
    ) -> LaneOverview:
        workspace = state.workspace
        note = await self.control.note(workspace, lane)
        dead = (await self._dead_counts(workspace)).get(lane, _NO_LETTERS)
        activity = lane_activity(counts, lane)
        upstream = {
            name.removeprefix("status:"): count
            for name, count in sorted(activity.items())
            if name.startswith("status:")
        }
        # A workspace without the lane's credentials has no streams for it: all zero.
        mine = next((s for s in state.lanes if s.lane == lane), None)
        lane_cause = mine.pause_cause if mine else ""
        lane_remaining_s = mine.pause_remaining_s if mine else 0.0
        cause = PauseCause.MANUAL if note else lane_cause
        return LaneOverview(
            workspace=workspace,
            lane=lane,
            waiting=sum(mine.shard_backlog) if mine else 0,
            oldest_age_s=mine.oldest_age_s if mine else 0.0,
            accepted_per_min=activity.get("accepted", 0.0),
            delivered_per_min=activity.get("delivered", 0.0),
            dead_lettered_per_min=activity.get("dead_lettered", 0.0),
            paused=cause if lane_remaining_s > 0 else "",
            pause_reason=note.reason if note else "",
            pause_by=note.who if note else "",
            pause_remaining_s=lane_remaining_s,
            dead_letters=dead.count,
            dead_by_class=dead.by_class,
            dead_by_status=dead.by_status,
            upstream_per_min=upstream,
        )

    async def _dead_counts(self, workspace: str) -> dict[str, _LaneLetters]:
        """Each lane's dead letters by class and by upstream status.

        Reused while the stream is unchanged: counting reads every letter.
        """
        stamp = await self.dlq.stamp(workspace)
        cached = self._dead_cache.get(workspace)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        by_class: dict[str, Counter[str]] = defaultdict(Counter)
        by_status: dict[str, Counter[str]] = defaultdict(Counter)
        by_producer: Counter[str] = Counter()
        async for stored in self.dlq.scan(workspace, DeadLetterFilter()):
            by_producer[stored.letter.producer or UNKNOWN_PRODUCER] += 1
            lane = str(stored.lane)
            by_class[lane][stored.letter.outcome_class] += 1
            status = stored.letter.status
            by_status[lane]["no status" if status is None else str(status)] += 1
        counts = {
            lane: _LaneLetters(
                sum(classes.values()),
                dict(sorted(classes.items())),
                dict(sorted(by_status[lane].items())),
            )
            for lane, classes in by_class.items()
        }
        self._dead_cache[workspace] = (stamp, counts)
        self._dead_producers[workspace] = by_producer
        return counts


@dataclass(frozen=True, slots=True)
class _LaneLetters:
    count: int
    by_class: dict[str, int]
    by_status: dict[str, int]


_NO_LETTERS = _LaneLetters(0, {}, {})
