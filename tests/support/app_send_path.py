"""The App send path under crash points (`tests.support.crash_points`).

`SendPath.run` drives one keyed send from the producer's POST (stored, outcome created,
the answer's short outcome wait) through one drain (lease, read, in-flight note, rate
slot, POST to the sandbox, outcome record, trim), then lets the system recover (leases
expire, pauses end, drains run without faults) and returns what happened, for
`violations` to judge: the sandbox got the send at most once; the job is exactly one of
delivered, dead-lettered once or still queued; no producer answer was a 5xx while the
job was stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from service import keys
from service.api.app import IngestApp
from service.config import Settings
from service.jobs import Lane
from service.lanes.app.inline import InlineSends
from service.lanes.app.jobs import FIELD_APP
from service.lanes.app.routes import AppIngest
from service.store.connections import SyncStore
from service.store.durability import Confirmation
from tests.support.crash_points import DrainedPath, Faults
from tests.support.processes import wait_until
from tests.support.streams import stream_fields

EMAIL = {"transactional_message_id": 7, "to": "a@example.com", "identifiers": {"id": "p1"}}


@dataclass
class RunResult:
    """What one run of the send path came to."""

    point: int
    mode: str
    hit: str | None
    answers: list[int] = field(default_factory=list)
    #: Answers that were a 5xx while the job was already stored.
    stored_5xx: int = 0
    job_id: str | None = None
    #: Repeats answered with another job than the first try's.
    other_job_ids: int = 0
    sends: int = 0
    queued: int = 0
    letters: int = 0
    delivered: bool = False


def inline_senders(api: IngestApp) -> list[InlineSends]:
    """The App lane's own senders of `api` (one per App ingest handler owner)."""
    owners = {id(o): o for r in api.router.routes if (o := getattr(r.handler, "__self__", None))}
    return [o.inline for o in owners.values() if isinstance(o, AppIngest)]


def violations(result: RunResult) -> list[str]:
    """The at-most-once properties `result` breaks (empty: none)."""
    found = []
    if result.sends > 1:
        found.append(f"sent {result.sends} times")
    if result.stored_5xx:
        found.append(f"{result.stored_5xx} 5xx answer(s) for a stored job")
    states = [result.delivered, result.letters > 0, result.queued > 0]
    accepted = any(200 <= a < 300 for a in result.answers)
    if result.letters > 1:
        found.append(f"{result.letters} dead letters")
    if result.queued > 1:
        found.append(f"queued {result.queued} times")
    if sum(states) > 1:
        found.append(f"in {sum(states)} states at once: {states}")
    if accepted and not any(states):
        found.append("accepted (2xx) and then lost")
    if result.other_job_ids:
        found.append("a repeat of the request named another job")
    if result.delivered and result.sends == 0:
        found.append("reported delivered without a send")
    return found


class SendPath(DrainedPath):
    """One keyed App send, producer to outcome, run in this process against `settings`."""

    def __init__(
        self,
        settings: Settings,
        api_url: str,
        sandbox: httpx.Client,
        client: SyncStore,
        faults: Faults,
        *,
        confirmation: Confirmation | None = None,
        api: IngestApp | None = None,
    ) -> None:
        super().__init__(Lane.APP, settings, api_url, client, faults, confirmation=confirmation)
        self.sandbox = sandbox
        #: The api under test, in this process: its own sends end before the run's drains
        #: and lease expiry (in production a send ends long before its lease).
        self.inline = [] if api is None else inline_senders(api)

    def run(
        self,
        point: int,
        mode: str,
        *,
        key: str = "order-1",
        repeats: int = 1,
        also: int | None = None,
    ) -> RunResult:
        """One run failing round trip `point` (and `also`) in `mode`; the producer sends
        the request `repeats` times (a repeat after an answer, as a client whose answer
        was lost). Two drain passes run under faults (the sweeper's re-trigger)."""
        self._reset()
        with self.faults.bypass():
            self.sandbox.post("/_sandbox/reset").raise_for_status()
        result = RunResult(point, mode, None)
        self.faults.arm(frozenset({point} if also is None else {point, also}), mode)
        try:
            for _ in range(repeats):
                self._produce(result, key)
            self._await_api_sends()
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

    def _produce(self, result: RunResult, key: str) -> None:
        headers = {"Authorization": "Bearer dev-ingest-key", "Idempotency-Key": key}
        for _ in range(3):  # as the official clients do on a 5xx
            answer = self._api.post("/v1/send/email", json=EMAIL, headers=headers)
            result.answers.append(answer.status_code)
            if answer.status_code < 500:
                if answer.status_code < 300:
                    job_id = self._job_of(answer, key)
                    if result.job_id not in (None, job_id):
                        result.other_job_ids += 1
                    result.job_id = job_id
                return
            with self.faults.bypass():
                if self._queued():
                    result.stored_5xx += 1

    def _await_api_sends(self) -> None:
        """The api's own sends of this run have ended (a run that goes on with one still
        in flight would count its outcome in the wrong run, or in none)."""
        wait_until(
            lambda: all(sender.idle for sender in self.inline),
            timeout_s=10,
            interval_s=0.005,
            what="the api's inline App sends to end",
        )

    def _job_of(self, answer: httpx.Response, key: str) -> str:
        """The job a 2xx names: a 202's own, or (Customer.io's 200 to the api's own send)
        the one the first try's remembered answer names."""
        body = answer.json()
        if "job_id" in body:
            return str(body["job_id"])
        with self.faults.bypass():
            remembered = self.redis.get(keys.idempotency("default", key))
            if remembered is not None:
                return str(orjson.loads(orjson.loads(remembered)["body"])["job_id"])
            # Not remembered (that write failed): the run's one outcome record names it.
            [record] = list(self.redis.scan_iter(match=keys.app_outcome("default", "*")))
        return str(record.decode()).rsplit(":", 1)[1]

    def _queued(self) -> list[dict[str, Any]]:
        """Every App job queued, live or bulk."""
        found = []
        for key in self.redis.scan_iter(match="cioq:q:*"):
            for fields in stream_fields(self.redis, key):
                if FIELD_APP in fields:
                    found.append(orjson.loads(fields[FIELD_APP]))
        return found

    def _observe(self, result: RunResult) -> None:
        records = self.sandbox.get("/_sandbox/received").json()["records"]
        result.sends = len(records)  # the sandbox records the sends it acted on
        queued = [str(job["id"]) for job in self._queued()]
        result.queued = len(queued)
        letters = [str(letter["id"]) for letter in self._letters()]
        result.letters = len(letters)
        job_id = result.job_id or next(iter(queued + letters), None)
        if job_id is not None:
            raw = self.redis.hget(keys.app_outcome("default", job_id), "record")
            state = orjson.loads(raw).get("state") if raw else None
            result.delivered = state == "delivered" and not letters and not queued


def baseline(path: SendPath, *, repeats: int = 1) -> int:
    """Run the path clean; how many round trips it made."""
    clean = path.run(0, "none", repeats=repeats)
    assert violations(clean) == [] and clean.sends == 1 and clean.delivered
    path.run(10**9, "none", repeats=repeats)  # a point never reached: counts only
    return path.faults.count


def sweep(
    path: SendPath, modes: tuple[str, ...], *, repeats: int = 1
) -> tuple[int, list[RunResult]]:
    """Fail each round trip in every mode; a few points over the clean count, as the
    count varies a little (a rate slot's wait, the api's periodic backlog read)."""
    points = baseline(path, repeats=repeats)
    runs = [path.run(n, m, repeats=repeats) for m in modes for n in range(1, points + 6)]
    return points, runs


def check(points: int, results: list[RunResult], modes: tuple[str, ...], label: str) -> None:
    """No run broke a property, nearly every point fired; prints the counts."""
    broken = [(r.point, r.mode, r.hit, violations(r)) for r in results if violations(r)]
    assert broken == [], broken
    for mode in modes:
        fired = sum(1 for r in results if r.mode == mode and r.hit)
        # Nearly every point fires (a stall only where the drain, a sync client, runs;
        # unfsynced only where a write is confirmed: the enqueue, the in-flight note).
        least = {"stall": 5, "unfsynced": 2}.get(mode, points * 4 // 5)
        assert fired >= least, (mode, fired)
    hit = {r.hit for r in results if r.hit}
    print(f"\n{label}: {points} round trips x {len(modes)} modes = {len(results)} runs")
    print("points fired:", {m: sum(1 for r in results if r.mode == m and r.hit) for m in modes})
    print("round trips failed:", sorted(hit))
