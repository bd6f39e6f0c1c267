"""A stand-in for Celery's broker in in-process tests: trigger calls are recorded."""

from __future__ import annotations

from collections.abc import Sequence

from service.jobs import Lane, Traffic
from service.triggers import Trigger


class RecordingTriggers:
    """Records `send` calls instead of publishing them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, float]] = []
        self.lanes: list[Lane] = []
        #: For each call in `sent`: (traffic, whether it went to the bulk queue).
        self.queues: list[tuple[Traffic, bool]] = []

    def send(
        self,
        workspace: str,
        shard: int,
        *,
        lane: Lane,
        traffic: Traffic = Traffic.LIVE,
        bulk: bool = False,
        countdown_s: float = 0.0,
    ) -> None:
        self.sent.append((workspace, shard, countdown_s))
        self.lanes.append(lane)
        self.queues.append((traffic, bulk or traffic is Traffic.BULK))

    async def send_all(self, triggers: Sequence[Trigger]) -> None:
        for t in triggers:
            self.send(
                t.workspace,
                t.shard,
                lane=t.lane,
                traffic=t.traffic,
                bulk=t.bulk,
                countdown_s=t.countdown_s,
            )

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass
