"""Queue-state gauges read from Redis at scrape time, and the drain-rate record behind them.

The api's ``/metrics`` runs `QueueStateCollector` on each scrape: per workspace it reads
every shard's length and head entry, the pause key, the dead-letter stream's length, the
letters retention removed (a counter the sweeper keeps in Redis) and the recent drain
rate, in one pipelined round trip. A Redis that is slow or gone costs one short timeout
and shows as ``cioq_queue_state_up 0``; the rest of the scrape is unaffected.

``cioq_backlog_seconds`` is the autoscaling signal: backlog ÷ the workspace's recent
drain rate, i.e. how long the current workers would take to empty the queue. When
nothing was drained in the window it falls back to the oldest entry's age, so a stuck
queue still reads as a growing number instead of a division by zero.

Unlike the store, this module does not translate redis-py errors into StoreUnavailable:
a failed reading is tolerated (logged, ``up`` 0), never raised. It catches the same
errors the store's boundary does (`STORE_ERRORS`), cluster topology errors included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service import keys
from service.config import MetricsSettings, QueueSettings, Workspace, find_workspace
from service.jobs import Lane, Traffic
from service.store.connections import STORE_ERRORS, SyncStore
from service.store.shard_state import ask_fill, stream_fills
from service.store.shards import PauseCause

log = logging.getLogger("cioq.metrics")

#: Pause causes as labels (an operator's pause is `PauseCause.MANUAL`).
PAUSE_CAUSES = tuple(PauseCause)


def record_drained(
    client: SyncStore,
    workspace: str,
    count: int,
    metrics: MetricsSettings,
    *,
    now_s: float | None = None,
) -> None:
    """Add `count` resolved jobs to the workspace's per-second drain counts.

    The hash holds one field per epoch second. Each write deletes the fields of the two
    windows before the current one, and the key expires two windows after the last
    write, so no field outlives its use. The jobs are already resolved when this runs:
    a failure here only costs accuracy of the rate, so it is logged, never raised.
    """
    pipe = client.pipeline(transaction=True)
    queue_drained(pipe, workspace, count, metrics, now_s=now_s)
    try:
        pipe.execute()
    except STORE_ERRORS as exc:
        log.warning("could not record the drain rate of %s: %s", workspace, exc)


def queue_drained(
    pipe: Any, workspace: str, count: int, metrics: MetricsSettings, *, now_s: float | None = None
) -> None:
    """`record_drained`'s commands, queued on `pipe` (a drain sends them with its resolve)."""
    window_s = metrics.drain_rate_window_s
    second = int(time.time() if now_s is None else now_s)
    key = keys.drain_rate(workspace)
    pipe.hincrby(key, str(second), count)
    # Pruning names two windows of fields: once a second per process is enough (a drain
    # of lone App sends resolves hundreds of times a second).
    if _pruned.get(key) != second:
        _pruned[key] = second
        pipe.hdel(key, *(str(s) for s in range(second - 3 * window_s, second - window_s)))
        pipe.expire(key, 2 * window_s)


#: The second each drain-rate key was last pruned by this process.
_pruned: dict[str, int] = {}


def drain_rate_per_s(counts: dict[bytes, bytes], *, now_s: float, window_s: int) -> float:
    """Mean jobs drained per second over the `window_s` seconds before `now_s`."""
    first = int(now_s) - window_s
    total = sum(int(count) for second, count in counts.items() if int(second) >= first)
    return total / window_s


@dataclass(frozen=True, slots=True)
class LaneState:
    lane: Lane
    shard_backlog: tuple[int, ...]
    pause_cause: str
    pause_remaining_s: float
    oldest_age_s: float


@dataclass(frozen=True, slots=True)
class WorkspaceState:
    workspace: str
    lanes: tuple[LaneState, ...]
    oldest_age_s: float
    dead_letters: int
    drain_rate_per_s: float
    #: Dead letters retention removed, ever (kept in Redis by the sweeper that removes them).
    dead_letters_expired: int = 0
    #: Jobs of forgotten people dropped, by where (`service.store.tombstones.DropPlace`).
    forgotten_dropped: tuple[tuple[str, int], ...] = ()

    @property
    def backlog(self) -> int:
        return sum(sum(lane.shard_backlog) for lane in self.lanes)

    @property
    def backlog_seconds(self) -> float:
        if not self.backlog:
            return 0.0
        if self.drain_rate_per_s > 0:
            return self.backlog / self.drain_rate_per_s
        return self.oldest_age_s


class QueueStateCollector(Collector):
    """Backlog, oldest age, backlog_seconds, DLQ size and pauses, read when scraped."""

    def __init__(
        self,
        queue: QueueSettings,
        metrics: MetricsSettings,
        workspaces: tuple[Workspace, ...],
        client: SyncStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.shards = queue.shards
        self.window_s = metrics.drain_rate_window_s
        self.workspaces = workspaces
        self.redis = client
        self.clock = clock

    def describe(self) -> list[Metric]:
        # Nothing up front: registering must not read Redis.
        return []

    def read(self, workspace: str) -> WorkspaceState:
        shards = range(self.shards)
        lanes = find_workspace(self.workspaces, workspace).lanes
        pipe = self.redis.pipeline(transaction=False)
        for lane in lanes:
            # Each shard's live and bulk streams, summed per shard number below.
            ask_fill(
                pipe,
                [
                    keys.shard_keys(workspace, shard, lane, traffic).stream
                    for traffic in Traffic
                    for shard in shards
                ],
            )
            pipe.get(keys.pause(workspace, lane))
            pipe.pttl(keys.pause(workspace, lane))
        pipe.xlen(keys.dead_letters(workspace))
        pipe.hgetall(keys.drain_rate(workspace))
        pipe.get(keys.dead_letters_expired(workspace))
        pipe.hgetall(keys.forget_dropped(workspace))
        results = pipe.execute()
        now_s = self.clock()
        n = len(shards)
        per_lane = 2 * n * len(Traffic) + 2
        states: list[LaneState] = []
        for i, lane in enumerate(lanes):
            part = results[i * per_lane : (i + 1) * per_lane]
            fills = stream_fills(part[:-2])
            heads = [fill.oldest_ms for fill in fills if fill.oldest_ms is not None]
            lengths = [fill.length for fill in fills]
            cause_raw, pttl_ms = part[-2:]
            cause = PauseCause.of(cause_raw.decode()) if cause_raw else ""
            states.append(
                LaneState(
                    lane=lane,
                    shard_backlog=tuple(sum(lengths[s::n]) for s in range(n)),
                    pause_cause=cause,
                    pause_remaining_s=max(int(pttl_ms), 0) / 1000 if cause else 0.0,
                    oldest_age_s=max(now_s - min(heads) / 1000, 0.0) if heads else 0.0,
                )
            )
        dead, rate, expired, dropped = results[len(lanes) * per_lane :]
        return WorkspaceState(
            workspace=workspace,
            lanes=tuple(states),
            oldest_age_s=max((s.oldest_age_s for s in states), default=0.0),
            dead_letters=int(dead),
            drain_rate_per_s=drain_rate_per_s(rate, now_s=now_s, window_s=self.window_s),
            dead_letters_expired=int(expired or 0),
            forgotten_dropped=tuple(
                sorted((k.decode(), int(v)) for k, v in (dropped or {}).items())
            ),
        )

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        up = GaugeMetricFamily(
            "cioq_queue_state_up", "1 if the last scrape could read queue state from Redis."
        )
        try:
            states = [self.read(ws.name) for ws in self.workspaces]
        except STORE_ERRORS as exc:
            log.warning("queue state unavailable for /metrics: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _families(states)
        duration = GaugeMetricFamily(
            "cioq_queue_state_read_seconds", "Time the last scrape spent reading queue state."
        )
        duration.add_metric([], time.perf_counter() - started)
        yield duration


def _families(states: list[WorkspaceState]) -> Iterator[Metric]:
    ws = ["workspace"]
    wl = ["workspace", "lane"]
    backlog = GaugeMetricFamily(
        "cioq_backlog_entries", "Jobs waiting in the queue, every lane.", labels=ws
    )
    lane_backlog = GaugeMetricFamily(
        "cioq_lane_backlog_entries", "Jobs waiting in each lane's streams.", labels=wl
    )
    shard_backlog = GaugeMetricFamily(
        "cioq_shard_backlog_entries",
        "Jobs waiting in each shard of each lane.",
        labels=["workspace", "lane", "shard"],
    )
    oldest = GaugeMetricFamily(
        "cioq_backlog_oldest_age_seconds",
        "Age of the oldest waiting job (0 when the queue is empty).",
        labels=ws,
    )
    seconds = GaugeMetricFamily(
        "cioq_backlog_seconds",
        "Backlog divided by the recent drain rate: time to empty the queue (autoscaling signal).",
        labels=ws,
    )
    rate = GaugeMetricFamily(
        "cioq_drain_rate_ops_per_second",
        "Jobs resolved (delivered or dead-lettered) per second over the recent window.",
        labels=ws,
    )
    dlq = GaugeMetricFamily(
        "cioq_dead_letter_entries", "Jobs in the dead-letter stream.", labels=ws
    )
    expired = CounterMetricFamily(
        "cioq_dead_letters_expired",
        "Dead letters removed for being older than CIOQ_DEAD_LETTER_MAX_AGE_S.",
        labels=ws,
    )
    forgotten = CounterMetricFamily(
        "cioq_forgotten_jobs_dropped",
        "Jobs naming a forgotten person (a tombstone) dropped unsent, by where: replay (a "
        "dead-letter replay deleted the letter) or ingest (suppress mode refused the call).",
        labels=["workspace", "where"],
    )
    paused = GaugeMetricFamily(
        "cioq_workspace_paused",
        "1 while delivery to a workspace's lane is paused, by cause (throttle: 429, "
        "setup: 401/403, manual: an operator).",
        labels=["workspace", "lane", "cause"],
    )
    remaining = GaugeMetricFamily(
        "cioq_workspace_pause_remaining_seconds", "Time left on the current pause.", labels=wl
    )
    for state in states:
        name = [state.workspace]
        backlog.add_metric(name, state.backlog)
        for lane in state.lanes:
            labels = [state.workspace, str(lane.lane)]
            lane_backlog.add_metric(labels, sum(lane.shard_backlog))
            for shard, length in enumerate(lane.shard_backlog):
                shard_backlog.add_metric([*labels, str(shard)], length)
            for cause in PAUSE_CAUSES:
                paused.add_metric([*labels, cause], 1 if lane.pause_cause == cause else 0)
            remaining.add_metric(labels, lane.pause_remaining_s)
        oldest.add_metric(name, state.oldest_age_s)
        seconds.add_metric(name, state.backlog_seconds)
        rate.add_metric(name, state.drain_rate_per_s)
        dlq.add_metric(name, state.dead_letters)
        expired.add_metric(name, state.dead_letters_expired)
        for where, count in state.forgotten_dropped:
            forgotten.add_metric([state.workspace, where], count)
    yield from (backlog, lane_backlog, shard_backlog, oldest, seconds, rate, dlq, expired)
    yield forgotten
    yield from (paused, remaining)
