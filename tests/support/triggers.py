"""A stand-in for Celery's broker in in-process tests: trigger calls are recorded."""

from __future__ import annotations

from service.lanes import Lane


class RecordingTriggers:
    """Records `send` calls instead of publishing them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, float]] = []
        self.lanes: list[Lane] = []

    def send(
        self, workspace: str, shard: int, *, lane: Lane = Lane.TRACK, countdown_s: float = 0.0
    ) -> None:
        self.sent.append((workspace, shard, countdown_s))
        self.lanes.append(lane)

    def close(self) -> None:
        pass
