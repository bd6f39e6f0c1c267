"""A stand-in for Celery's broker in in-process tests: trigger calls are recorded."""

from __future__ import annotations


class RecordingTriggers:
    """Records `send` calls instead of publishing them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, float]] = []

    def send(self, workspace: str, shard: int, *, countdown_s: float = 0.0) -> None:
        self.sent.append((workspace, shard, countdown_s))

    def close(self) -> None:
        pass
