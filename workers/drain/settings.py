"""What a drain reads of the settings: its groups, and each lane's limits as the lane's spec
reads them (a lane may read any group)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from service.config import DrainSettings, MetricsSettings, QueueSettings, RetrySettings, Settings
from service.jobs import Lane
from service.lanes.registry import LANES


@dataclass(frozen=True, slots=True)
class Limits:
    """A lane's byte limits (a request body, a single job) and whether its transform is on,
    as the lane's spec reads them from the settings."""

    batch_bytes: int
    item_bytes: int
    transform_on: bool = False

    @classmethod
    def of(cls, lane: Lane, s: Settings) -> Limits:
        spec = LANES[lane]
        transform_on = spec.transform is not None and spec.transform.enabled(s)
        return cls(spec.max_batch_bytes(s), spec.max_item_bytes(s), transform_on)


@dataclass(frozen=True, slots=True)
class SentIndexing:
    """Which workspaces' delivered jobs go into the index that ties late failures to them
    (those with an App API key: only they are polled), and for how long."""

    workspaces: frozenset[str] = frozenset()
    window_s: float = 0.0
    per_person: int = 1

    @classmethod
    def of(cls, s: Settings) -> SentIndexing:
        polled = frozenset(ws.name for ws in s.workspaces if ws.app_api_key is not None)
        return cls(polled, s.app.late_link_window_s, s.app.late_link_per_person)

    def on(self, workspace: str) -> bool:
        return self.window_s > 0 and workspace in self.workspaces


#: No workspace's delivered jobs are indexed.
NO_SENT_INDEX = SentIndexing()


@dataclass(frozen=True, slots=True)
class DrainerSettings:
    """The settings a `Drainer` reads: its groups, and each lane's limits as the lane's
    spec reads them (from any group)."""

    drain: DrainSettings
    queue: QueueSettings
    retry: RetrySettings
    metrics: MetricsSettings
    limits: Mapping[Lane, Limits]
    sent_index: SentIndexing = NO_SENT_INDEX

    @classmethod
    def of(cls, settings: Settings) -> DrainerSettings:
        """The groups of `settings`, and the limits of every lane registered by now."""
        limits = {lane: Limits.of(lane, settings) for lane in LANES}
        return cls(
            settings.drain,
            settings.queue,
            settings.retry,
            settings.metrics,
            limits,
            SentIndexing.of(settings),
        )
