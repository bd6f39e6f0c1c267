"""Crash points: fail the N-th Redis round trip of the App send path, for every N.

`Faults` wraps redis-py in this process (sync and asyncio, single commands and
pipelines, so Lua script calls too) and counts every round trip. Armed at point N, it
makes the N-th one fail the way redis-py would fail it:

- ``reset``: a ConnectionError before the command is sent (nothing applied);
- ``timeout``: a TimeoutError after Redis ran it (applied, the reply lost);
- ``noscript``: the script cache is flushed just before (as after a restart or a
  failover), so an EVALSHA gets NOSCRIPT;
- ``stall``: the drain is paused there past its lease: the lease expires and a second
  drain runs to the end before the first goes on (sync calls, the drain's, only).

`SendPath.run` drives one keyed send from the producer's POST (stored, outcome created,
the answer's short outcome wait) through one drain (lease, read, in-flight note, rate
slot, POST to the sandbox, outcome record, trim), then lets the system recover (leases
expire, pauses end, drains run without faults) and returns what happened, for
`violations` to judge: the sandbox got the send at most once; the job is exactly one of
delivered, dead-lettered once or still queued; no producer answer was a 5xx while the
job was stored.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import redis
import redis.asyncio.client as async_client
import redis.client as sync_client

from service import keys
from service.config import Settings
from service.jobs import Lane
from service.lanes.app.jobs import FIELD_APP
from tests.support.drain import build_drainer
from tests.support.streams import stream_fields

MODES = ("reset", "timeout", "noscript", "stall")
EMAIL = {"transactional_message_id": 7, "to": "a@example.com", "identifiers": {"id": "p1"}}


class Faults:
    """Counts this process's Redis round trips and fails the armed one."""

    def __init__(self, redis_url: str) -> None:
        self._url = redis_url
        self._lock = threading.Lock()
        self._local = threading.local()
        self.count = 0
        self.targets: frozenset[int] = frozenset()
        self.mode = ""
        #: What the armed point hit (a command name, or PIPELINE[...]), once it fired.
        self.hit: str | None = None
        self.on_stall: Callable[[], None] = lambda: None

    def arm(self, targets: frozenset[int], mode: str) -> None:
        """Fail the round trips numbered `targets` (1 = the first) in `mode`."""
        with self._lock:
            self.count, self.targets, self.mode, self.hit = 0, targets, mode, None

    def disarm(self) -> int:
        with self._lock:
            counted, self.targets = self.count, frozenset()
        return counted

    @contextmanager
    def bypass(self) -> Iterator[None]:
        """Round trips here are neither counted nor failed (the harness's own reads)."""
        before = getattr(self._local, "bypass", False)
        self._local.bypass = True
        try:
            yield
        finally:
            self._local.bypass = before

    def _due(self, name: str, *, sync: bool) -> str | None:
        if getattr(self._local, "bypass", False):
            return None
        with self._lock:
            if not self.targets:
                return None
            self.count += 1
            if self.count not in self.targets:
                return None
            if self.mode == "stall" and not sync:
                return None
            self.hit = name
            return self.mode

    def _before(self, mode: str | None) -> None:
        if mode == "reset":
            raise redis.ConnectionError("Connection reset by peer (injected)")
        if mode == "noscript":
            with self.bypass(), redis.Redis.from_url(self._url) as raw:
                raw.script_flush()
        if mode == "stall":
            with self.bypass():
                self.on_stall()

    @staticmethod
    def _after(mode: str | None) -> None:
        if mode == "timeout":
            raise redis.TimeoutError("Timeout reading from socket (injected)")

    def install(self, patch: Callable[[Any, str, Any], None]) -> None:
        """Wrap redis-py's round trips; `patch` is pytest's ``monkeypatch.setattr``."""
        faults = self
        sync_execute = sync_client.Redis.execute_command
        sync_pipeline = sync_client.Pipeline.execute
        async_execute = async_client.Redis.execute_command
        async_pipeline = async_client.Pipeline.execute

        def execute(self: Any, *args: Any, **options: Any) -> Any:
            mode = faults._due(str(args[0]), sync=True)
            faults._before(mode)
            reply = sync_execute(self, *args, **options)
            faults._after(mode)
            return reply

        def pipeline(self: Any, raise_on_error: bool = True) -> Any:
            mode = faults._due(_stack_name(self.command_stack), sync=True)
            faults._before(mode)
            reply = sync_pipeline(self, raise_on_error)
            faults._after(mode)
            return reply

        async def aexecute(self: Any, *args: Any, **options: Any) -> Any:
            mode = faults._due(str(args[0]), sync=False)
            faults._before(mode)
            reply = await async_execute(self, *args, **options)
            faults._after(mode)
            return reply

        async def apipeline(self: Any, raise_on_error: bool = True) -> Any:
            mode = faults._due(_stack_name(self.command_stack), sync=False)
            faults._before(mode)
            reply = await async_pipeline(self, raise_on_error)
            faults._after(mode)
            return reply

        patch(sync_client.Redis, "execute_command", execute)
        patch(sync_client.Pipeline, "execute", pipeline)
        patch(async_client.Redis, "execute_command", aexecute)
        patch(async_client.Pipeline, "execute", apipeline)


def _stack_name(stack: list[Any]) -> str:
    names = []
    for item in stack:
        args = item[0] if isinstance(item, tuple) else getattr(item, "args", ())
        names.append(str(args[0]) if args else "?")
    return "PIPELINE[" + ",".join(names) + "]"


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


class SendPath:
    """One keyed App send, producer to outcome, run in this process against `settings`."""

    def __init__(
        self,
        settings: Settings,
        api_url: str,
        sandbox: httpx.Client,
        client: redis.Redis,
        faults: Faults,
    ) -> None:
        self.settings = settings
        self.api_url = api_url
        self.sandbox = sandbox
        self.redis = client
        self.faults = faults
        faults.on_stall = self._stalled
        # Two workers, each built once (a drainer's HTTP clients take ~70 ms to build): the
        # first drains under faults, the second takes over stalled drains and recovers.
        self._first = build_drainer(settings, client)
        self._second = build_drainer(settings, client)
        self._api = httpx.Client(base_url=api_url, timeout=15)

    def close(self) -> None:
        self._api.close()
        for drainer in (self._first, self._second):
            for sender in drainer.clients.values():
                sender.close()

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
        with self.faults.bypass():
            self.redis.flushdb()
            self.sandbox.post("/_sandbox/reset").raise_for_status()
        result = RunResult(point, mode, None)
        self.faults.arm(frozenset({point} if also is None else {point, also}), mode)
        try:
            for _ in range(repeats):
                self._produce(result, key)
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
                    job_id = str(answer.json()["job_id"])
                    if result.job_id not in (None, job_id):
                        result.other_job_ids += 1
                    result.job_id = job_id
                return
            with self.faults.bypass():
                if self._queued_ids():
                    result.stored_5xx += 1

    def _drain_once(self) -> None:
        for shard in range(self.settings.queue.shards):
            try:
                self._first.drain("default", shard, Lane.APP)
            except Exception:  # the worker task dies (Celery logs it); recovery follows
                continue

    def _stalled(self) -> None:
        """The drain is stuck at this step past its lease: another drain takes over."""
        for key in self.redis.scan_iter(match="cioq:lease:*"):
            self.redis.delete(key)
        self._drain_all()

    def _drain_all(self) -> None:
        for shard in range(self.settings.queue.shards):
            shard_keys = keys.shard_keys("default", shard, Lane.APP)
            if self.redis.xlen(shard_keys.stream):
                self._second.drain("default", shard, Lane.APP)

    def _recover(self) -> None:
        """Time passes without faults: leases expire, pauses end, drains run again."""
        for _ in range(4):
            self._expire()
            if not self._queued_ids():
                return
            self._drain_all()

    def _expire(self) -> None:
        """Leases, pauses, backoffs and rate slots run out (time passes)."""
        for pattern in ("cioq:lease:*", "cioq:pause:*", "cioq:retry:*", "cioq:bucket:*"):
            for key in self.redis.scan_iter(match=pattern):
                self.redis.delete(key)

    def _queued_ids(self) -> list[str]:
        found = []
        for key in self.redis.scan_iter(match="cioq:q:*"):
            for fields in stream_fields(self.redis, key):
                if FIELD_APP in fields:
                    found.append(str(orjson.loads(fields[FIELD_APP])["id"]))
        return found

    def _observe(self, result: RunResult) -> None:
        records = self.sandbox.get("/_sandbox/received").json()["records"]
        result.sends = len(records)  # the sandbox records the sends it acted on
        queued = self._queued_ids()
        result.queued = len(queued)
        letters = [
            str(orjson.loads(fields[b"payload"])["id"])
            for fields in stream_fields(self.redis, keys.dead_letters("default"))
        ]
        result.letters = len(letters)
        job_id = result.job_id or next(iter(queued + letters), None)
        if job_id is not None:
            raw = self.redis.hget(keys.app_outcome("default", job_id), "record")
            state = orjson.loads(raw).get("state") if raw else None
            result.delivered = state == "delivered" and not letters and not queued
