"""Dead letters: jobs that can never succeed as they are, kept for an operator.

One stream per workspace (`keys.dead_letters`), never trimmed automatically. Each entry
carries the job's payload and kind, why it died (`reason`, `outcome_class` stored as
``cls``, upstream `status`), every attempt's time and status, and where it came from
(`source` = shard entry id), and the producer whose ingest key sent it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
import redis
from redis.commands.core import Script

from service import keys
from service.errors import LeaseLost
from service.jobs import Lane, job_kind, op_type_of
from service.store import durability, events
from service.store.connections import SyncStore, load_script, store_errors
from service.store.durability import Confirmation


class LetterReason(StrEnum):
    """Why cioq dead-lettered a job (stored as ``reason``; the console and CLI filter on it).

    A job Customer.io refused by item (a 207) keeps Customer.io's own reason instead.
    """

    #: Over its lane's size limit: never sent.
    OP_TOO_LARGE = "op_too_large"
    #: Customer.io refused it (4xx).
    INVALID = "invalid"
    #: Customer.io may have acted on it (App lane); never resent by cioq.
    AMBIGUOUS = "ambiguous"
    #: It took its worker down `crash_limit` times.
    CRASH_LOOP = "crash_loop"
    #: Its retries outlasted ``retry_max_age_s``.
    MAX_AGE = "max_age"
    #: Its retries reached ``retry_max_attempts``.
    MAX_ATTEMPTS = "max_attempts"


class LetterClass(StrEnum):
    """What kind of failure a dead letter records (stored as ``cls``)."""

    #: Refused by item inside a batch Customer.io otherwise took (207).
    PARTIAL = "partial"
    INVALID = "invalid"
    #: Retried until the retry budget ran out.
    TRANSIENT = "transient"
    CRASH = "crash"
    AMBIGUOUS = "ambiguous"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One job leaving the queue for the dead-letter stream."""

    kind: str
    payload: bytes
    source: str
    #: A `LetterReason`, or Customer.io's own reason for an item it refused.
    reason: str
    #: A `LetterClass`.
    outcome_class: str
    status: int | None = None
    message: str = ""
    field: str = ""
    attempts: tuple[tuple[int, str], ...] = ()
    accepted_ms: int = 0
    dead_ms: int = 0
    #: The stream entry the job came from, across lanes and traffic classes (its shard's
    #: tag and entry id): one letter per entry. Not stored; empty: no such limit.
    entry: str = ""
    #: The producer whose ingest key sent the job (empty: not recorded).
    producer: str = ""

    @property
    def lane(self) -> Lane:
        """The lane the job came from (a broadcast trigger's is `Lane.BROADCASTS`)."""
        kind = job_kind(self.kind)
        if kind.by_route is None:  # only a kind that spans lanes needs its route
            return kind.lane
        try:
            return kind.restore(self.payload).lane
        except orjson.JSONDecodeError:
            return kind.lane

    def to_fields(self) -> dict[str, bytes | str | int]:
        return {
            "kind": self.kind,
            "payload": self.payload,
            "source": self.source,
            "reason": self.reason,
            "cls": self.outcome_class,
            "status": "" if self.status is None else self.status,
            "message": self.message,
            "field": self.field,
            "attempts": orjson.dumps([{"at_ms": at, "status": s} for at, s in self.attempts]),
            "accepted_ms": self.accepted_ms,
            "dead_ms": self.dead_ms,
            "producer": self.producer,
        }

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> DeadLetter:
        def text(name: str) -> str:
            return fields.get(name.encode(), b"").decode()

        status = text("status")
        attempts = orjson.loads(fields.get(b"attempts", b"[]"))
        return cls(
            kind=text("kind"),
            payload=fields.get(b"payload", b""),
            source=text("source"),
            reason=text("reason"),
            outcome_class=text("cls"),
            status=int(status) if status else None,
            message=text("message"),
            field=text("field"),
            attempts=tuple((int(a["at_ms"]), str(a["status"])) for a in attempts),
            accepted_ms=int(text("accepted_ms") or 0),
            dead_ms=int(text("dead_ms") or 0),
            producer=text("producer"),
        )


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """A dead letter as it sits in its workspace's stream, under its stream id."""

    id: str
    letter: DeadLetter

    @property
    def op_type(self) -> str:
        try:
            return op_type_of(self.letter.kind, self.letter.payload)
        except orjson.JSONDecodeError:
            return ""

    @property
    def lane(self) -> Lane:
        return self.letter.lane

    def subjects(self) -> set[str]:
        """Who the job concerns: its route and every identifier value it names."""
        try:
            data = orjson.loads(self.letter.payload)
        except orjson.JSONDecodeError:
            return set()
        return job_kind(self.letter.kind).subjects(data)

    @property
    def person(self) -> str:
        """Who the job concerns, as an operator reads it: ``id=42``, ``email=a@b``, a v1 route."""
        try:
            data = orjson.loads(self.letter.payload)
        except orjson.JSONDecodeError:
            return ""
        if not isinstance(data, dict):
            return ""
        return job_kind(self.letter.kind).person(data)

    def as_dict(self) -> dict[str, Any]:
        letter = self.letter
        out: dict[str, Any] = {
            "id": self.id,
            "person": self.person,
            "kind": letter.kind,
            "producer": letter.producer,
            "lane": str(self.lane),
            "op_type": self.op_type,
            "reason": letter.reason,
            "class": letter.outcome_class,
            "status": letter.status,
            "message": letter.message,
            "field": letter.field,
            "source": letter.source,
            "accepted_ms": letter.accepted_ms,
            "dead_ms": letter.dead_ms,
            "attempts": [{"at_ms": at, "status": s} for at, s in letter.attempts],
            "first_attempt_ms": letter.attempts[0][0] if letter.attempts else None,
            "last_attempt_ms": letter.attempts[-1][0] if letter.attempts else None,
        }
        try:
            out["payload"] = orjson.loads(letter.payload)
        except orjson.JSONDecodeError:
            out["payload"] = letter.payload.decode("utf-8", "replace")
        return out


#: How long a job's dead letter blocks a second one: far longer than any lease, so a drain
#: that lost its lease, or a retried write, finds the first letter.
LETTER_ONCE_MS = 7 * 24 * 3600 * 1000


class DeadLetterStore:
    """Writes dead letters; listing, replay and purge build on the same stream."""

    def __init__(self, client: SyncStore) -> None:
        self.redis = client
        #: How letters are confirmed before their entries are resolved (start-up verdict).
        self.confirmation: Confirmation | None = None
        self._add: Script = load_script(client, "dead_letter")

    def add(
        self,
        workspace: str,
        letters: Iterable[DeadLetter],
        fences: Sequence[tuple[str, int]] = (),
    ) -> int:
        """Append letters to the workspace's dead-letter stream; returns how many were new.

        One letter per shard entry (`DeadLetter.entry`, when named): a second try adds
        nothing. `fences` are
        the (lease key, token) of the shards the letters come from: LeaseLost when another
        drain holds one. On one Redis the check and the letters are one script; a
        cluster keeps leases on other nodes, so there the check runs just before.
        """
        found = list(letters)
        if not found:
            return 0
        stream = keys.dead_letters(workspace)
        once = [keys.dead_letter_once(workspace, x.entry) for x in found if x.entry]
        lua_keys = [stream, *once]
        args: list[Any] = [len(found), len(once), 0, LETTER_ONCE_MS]
        with store_errors("dead-lettering"):
            if isinstance(self.redis, redis.RedisCluster):
                self._check(fences)
            else:
                lua_keys += [lease for lease, _ in fences]
                args[2] = len(fences)
                args += [token for _, token in fences]
            for letter in found:
                fields = letter.to_fields()
                args += (1 if letter.entry else 0, len(fields))
                for name, value in fields.items():
                    args += (name, value)
            # Confirmed before the caller resolves the entries (audit F9): a letter the
            # level does not vouch for could vanish with the trimmed send.
            reply = durability.run_confirmed(
                self.redis, self.confirmation, self._add, lua_keys, args
            )
        if not isinstance(reply, list):
            raise LeaseLost("dead letters of a shard another drain holds")
        added = [x for x, flag in zip(found, reply, strict=True) if int(flag)]
        if added:
            events.dead_lettered(workspace, [(x.reason, x.lane, x.producer) for x in added])
        return len(added)

    def _check(self, fences: Sequence[tuple[str, int]]) -> None:
        for lease, token in fences:
            held = self.redis.get(lease)
            if held is None or int(held) != token:
                raise LeaseLost(lease)
