"""The Track and Pipelines paths under crash points (`tests.support.crash_points`).

`OrderedPath.run` has a producer send `OPS` operations for two people, one request each
(resending a request answered 5xx, as the official clients do), drains under faults,
lets the system recover, and returns what happened, for `violations` to judge by the
promises of these lanes, which deliver at least once:

- nothing acknowledged is lost: every operation answered 2xx reached the sandbox, or is
  still queued, or is dead-lettered;
- per-person order: for each person, the last arrival of each operation comes in the
  order the producer sent them (a batch sent again repeats earlier operations, but never
  leaves an older one last);
- sends may repeat: a duplicate is allowed and counted, not a violation.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from service.config import Settings
from service.jobs import Lane
from service.store.connections import SyncStore
from service.store.durability import Confirmation
from tests.support.crash_points import DrainedPath, Faults

#: (person, number) in the order the producer sends them.
OPS = [("p1", 0), ("p2", 1), ("p1", 2), ("p1", 3)]
INGEST_KEY = "dev-ingest-key"


@dataclass
class OrderedResult:
    """What one run of a Track or Pipelines path came to."""

    point: int
    mode: str
    hit: str | None
    acknowledged: set[int] = field(default_factory=set)
    #: Every arrival at the sandbox, in order: (person, number).
    arrivals: list[tuple[str, int]] = field(default_factory=list)
    queued: set[int] = field(default_factory=set)
    letters: set[int] = field(default_factory=set)

    @property
    def repeats(self) -> int:
        return sum(c - 1 for c in Counter(self.arrivals).values())


def violations(result: OrderedResult) -> list[str]:
    """The at-least-once and ordering properties `result` breaks (empty: none)."""
    found = []
    arrived = {n for _, n in result.arrivals}
    lost = result.acknowledged - arrived - result.queued - result.letters
    if lost:
        found.append(f"acknowledged and lost: {sorted(lost)}")
    for person in {p for p, _ in OPS}:
        last: dict[int, int] = {}
        for position, (who, n) in enumerate(result.arrivals):
            if who == person:
                last[n] = position
        order = sorted(last, key=last.__getitem__)
        if order != sorted(order):
            found.append(f"{person}'s operations last arrived in the order {order}")
    return found


class OrderedPath(DrainedPath):
    """Track (``/api/v2/entity``) or Pipelines (``/v1/identify``), producer to sandbox."""

    def __init__(
        self,
        lane: Lane,
        settings: Settings,
        api_url: str,
        sandbox: httpx.Client,
        client: SyncStore,
        faults: Faults,
        *,
        confirmation: Confirmation | None = None,
    ) -> None:
        super().__init__(lane, settings, api_url, client, faults, confirmation=confirmation)
        self.sandbox = sandbox

    def run(self, point: int, mode: str) -> OrderedResult:
        """One run failing round trip `point` in `mode`; two drain passes under faults."""
        self._reset()
        with self.faults.bypass():
            self.sandbox.post("/_sandbox/reset").raise_for_status()
        result = OrderedResult(point, mode, None)
        self.faults.arm(frozenset({point}), mode)
        try:
            for person, n in OPS:
                if self._produce(person, n):
                    result.acknowledged.add(n)
            self._drain_once()
            with self.faults.bypass():
                self._expire()
            self._drain_once()
        finally:
            result.hit = self.faults.hit
            self.faults.disarm()
        with self.faults.bypass():
            self._recover()
            self._observe(result)
        return result

    def _produce(self, person: str, n: int) -> bool:
        """Whether the request was acknowledged (2xx) within the client's three tries."""
        if self.lane is Lane.TRACK:
            path = "/api/v2/entity"
            body: dict[str, Any] = {
                "type": "person",
                "action": "identify",
                "identifiers": {"id": person},
                "attributes": {"n": n},
            }
        else:
            path, body = "/v1/identify", {"userId": person, "traits": {"n": n}}
        for _ in range(3):
            answer = self._api.post(path, json=body, auth=(INGEST_KEY, ""))
            if answer.status_code < 500:
                return answer.status_code < 300
        return False

    def _number(self, op: dict[str, Any]) -> tuple[str, int]:
        if self.lane is Lane.TRACK:
            return str(op["identifiers"]["id"]), int(op["attributes"]["n"])
        return str(op["userId"]), int(op["traits"]["n"])

    def _observe(self, result: OrderedResult) -> None:
        records = self.sandbox.get("/_sandbox/received").json()["records"]
        result.arrivals = [self._number(record["op"]) for record in records]
        result.queued = {self._number(op)[1] for op in self._queued()}
        result.letters = {self._number(op)[1] for op in self._letters()}
