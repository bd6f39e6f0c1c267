"""The outcome of an App API job: what Customer.io answered, or why there is no answer.

Ingest writes a ``queued`` record right after the job is stored; the worker overwrites it
as attempts happen and when the job is final, then pushes to a one-shot list that the
ingest request waiting for it BLPOPs (so the wait is woken, never polled). Records are
kept ``app_outcome_ttl_s`` and are what the status URL answers. A record is a hash:
``record`` (the JSON) and ``attempts`` (counted with HINCRBY in the same transaction as
the write, so a send costs the worker one round trip for its outcome).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from service import keys
from service.config import AppLaneSettings
from service.store.connections import (
    AsyncStore,
    SyncStore,
    load_script,
    lua_source,
    store_errors,
)


class State(StrEnum):
    QUEUED = "queued"
    RETRYING = "retrying"  # an attempt failed in a way that is safe to resend
    DELIVERED = "delivered"  # 2xx: Customer.io's answer is in `status`/`body`
    REFUSED = "refused"  # 4xx: dead-lettered with Customer.io's answer
    AMBIGUOUS = "ambiguous"  # Customer.io may have acted: dead-lettered, never resent
    DEAD = "dead"  # dead-lettered for another reason (retry budget spent, crash loop)


FINAL = frozenset({State.DELIVERED, State.REFUSED, State.AMBIGUOUS, State.DEAD})
#: Final states the ingest request answers with Customer.io's own status and body.
_ANSWERED = frozenset({State.DELIVERED, State.REFUSED})
#: How long a ready marker waits for its reader: longer than any ingest wait.
_READY_TTL_MS = 60_000
#: One BLPOP never blocks longer than this, so the socket timeout never cuts it short.
_BLPOP_SLICE_S = 1.0


@dataclass(frozen=True, slots=True)
class Outcome:
    job_id: str
    state: State
    kind: str = ""
    status: int | None = None
    #: Customer.io's body, decoded when it was JSON.
    body: Any = None
    detail: str = ""
    attempts: int = 0
    delivery_id: str | None = None
    updated_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def encode(self) -> bytes:
        return orjson.dumps(self._fields())

    def _fields(self) -> dict[str, Any]:
        # By hand: `dataclasses.asdict` deep-copies the body, a third of a record's cost.
        return {
            "job_id": self.job_id,
            "state": self.state,
            "kind": self.kind,
            "status": self.status,
            "body": self.body,
            "detail": self.detail,
            "attempts": self.attempts,
            "delivery_id": self.delivery_id,
            "updated_ms": self.updated_ms,
        }

    @classmethod
    def decode(cls, raw: bytes | str, attempts: bytes | str | None = None) -> Outcome:
        data = orjson.loads(raw)
        data["state"] = State(data["state"])
        if attempts is not None:
            data["attempts"] = int(attempts)
        return cls(**data)

    def public(self, status_url: str) -> dict[str, Any]:
        """The record as the status URL shows it."""
        return {**self._fields(), "status_url": status_url}


def decode_body(raw: bytes) -> Any:
    """Customer.io's body as JSON when it is, else as text."""
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")


def delivered(job_id: str, kind: str, status: int, raw: bytes) -> Outcome:
    body = decode_body(raw)
    delivery_id = None
    if isinstance(body, dict):
        found = body.get("delivery_id", body.get("id"))
        delivery_id = None if found is None else str(found)
    return Outcome(job_id, State.DELIVERED, kind, status, body, "", 0, delivery_id)


def _pushed(raw: bytes | str) -> Outcome | None:
    """The record a worker pushed to the ready list, or None for a bare wake-up."""
    if raw in (b"1", "1"):
        return None
    try:
        found = Outcome.decode(raw)
    except (ValueError, TypeError, KeyError):
        return None
    return found if found.state in _ANSWERED else None


def _decode(found: list[Any]) -> Outcome | None:
    raw, attempts = found
    return None if raw is None else Outcome.decode(raw, attempts)


class AsyncOutcomes:
    """The ingest side: create the queued record, wait for the final one, read it."""

    def __init__(self, client: AsyncStore, app: AppLaneSettings) -> None:
        self.redis = client
        self.ttl_ms = int(app.app_outcome_ttl_s * 1000)

    async def create(self, workspace: str, outcome: Outcome) -> None:
        # NX: a fast worker may have written the final record already.
        key = keys.app_outcome(workspace, outcome.job_id)
        with store_errors("outcome"):
            await self.redis.eval(
                lua_source("outcome_create"), 1, key, outcome.encode(), self.ttl_ms
            )

    async def get(self, workspace: str, job_id: str) -> Outcome | None:
        key = keys.app_outcome(workspace, job_id)
        with store_errors("outcome"):
            return _decode(await self.redis.hmget(key, ["record", "attempts"]))

    async def wait(self, workspace: str, job_id: str, *, timeout_ms: int) -> Outcome | None:
        """The final outcome once it is there, or None after `timeout_ms`."""
        deadline = time.monotonic() + timeout_ms / 1000
        ready = keys.app_outcome_ready(workspace, job_id)
        with store_errors("outcome"):
            while (left_s := deadline - time.monotonic()) > 0:
                popped = await self.redis.blpop([ready], timeout=min(left_s, _BLPOP_SLICE_S))
                if popped is not None:
                    # The worker pushes the final record itself: the common answer needs
                    # no second read. A bare "1" (an older worker) is read from the hash.
                    pushed = _pushed(popped[1])
                    if pushed is not None:
                        return pushed
                    break
        found = await self.get(workspace, job_id)
        return found if found is not None and found.state in FINAL else None


def record_call(
    workspace: str,
    outcome: Outcome,
    ttl_ms: int,
    *,
    attempt: bool,
    claim: tuple[str, str, int] | None,
    wake: bool = True,
) -> dict[str, list[Any]]:
    """The keys and arguments of ``app_outcome.lua`` writing `outcome`. `wake`: push a
    final record to the list its waiting ingest request pops (not when the api sent the
    job itself and answers from the record in hand)."""
    key = keys.app_outcome(workspace, outcome.job_id)
    record = outcome.encode()
    claim_key, delivery_id, claim_ttl_s = claim if claim is not None else (key, "", 0)
    ready, ready_value = key, b""
    if wake and outcome.state in FINAL:
        ready = keys.app_outcome_ready(workspace, outcome.job_id)
        # Delivered or refused, the waiting request answers with the record as pushed
        # (it shows no attempt count); any other final state is read from the hash.
        ready_value = record if outcome.state in _ANSWERED else b"1"
    # One script, one command: a MULTI of up to nine cost a send a fifth of its CPU.
    args = [record, int(attempt), ttl_ms, delivery_id, claim_ttl_s]
    return {"keys": [key, claim_key, ready], "args": [*args, ready_value, _READY_TTL_MS]}


class Outcomes:
    """The worker side: record attempts and the final outcome, waking the waiting request."""

    def __init__(self, client: SyncStore, app: AppLaneSettings) -> None:
        self.redis = client
        self.ttl_ms = int(app.app_outcome_ttl_s * 1000)
        self._record = load_script(client, "app_outcome")

    def record(
        self,
        workspace: str,
        outcome: Outcome,
        *,
        attempt: bool = True,
        claim: tuple[str, str, int] | None = None,
    ) -> None:
        """Write `outcome`, counting one more attempt unless `attempt` is False; `claim`
        (set key, delivery id, TTL s) marks a delivery id as this send's in the same step."""
        with store_errors("outcome"):
            self._record(**self._call(workspace, outcome, attempt=attempt, claim=claim))

    def pending(
        self, workspace: str, outcome: Outcome, *, claim: tuple[str, str, int] | None = None
    ) -> PendingRecord:
        """`record`, left for the drain to write with its resolve (one round trip less)."""
        return PendingRecord(self, self._call(workspace, outcome, attempt=True, claim=claim))

    def _call(
        self,
        workspace: str,
        outcome: Outcome,
        *,
        attempt: bool,
        claim: tuple[str, str, int] | None,
    ) -> dict[str, list[Any]]:
        return record_call(workspace, outcome, self.ttl_ms, attempt=attempt, claim=claim)

    def get(self, workspace: str, job_id: str) -> Outcome | None:
        key = keys.app_outcome(workspace, job_id)
        with store_errors("outcome"):
            return _decode(self.redis.hmget(key, ["record", "attempts"]))


class PendingRecord:
    """A delivered send's outcome record, written by the drain ahead of its resolve."""

    def __init__(self, outcomes: Outcomes, call: dict[str, list[Any]]) -> None:
        self.outcomes = outcomes
        self.call = call

    def queue(self, pipe: Any) -> None:
        # EVAL with the source, not EVALSHA: a NOSCRIPT here would let the resolve queued
        # behind it run without the record (Redis caches the compiled script by its sha).
        lua_keys, args = self.call["keys"], self.call["args"]
        pipe.eval(self.outcomes._record.script, len(lua_keys), *lua_keys, *args)

    def run(self) -> None:
        with store_errors("outcome"):
            self.outcomes._record(**self.call)
