"""Forget a person: remove what cioq holds about them, then keep a tombstone.

A person is named by one or more identifiers (``id``, ``email``, ``cio_id``; a bare value
with an ``@`` is an email, any other an id). Forget first records a tombstone per
identifier (`service.store.tombstones`), so a replay or a suppressed ingest that races
the removal already drops the person's jobs; then each *remover* removes the person
from one place that holds person data, in order (`REMOVERS`). What a remover finds is
counted by name in the result and in the audit, which names the person only by a
digest (`Person.digest`), never by an identifier.

Adding a place that holds person data (an index, a cache) is one remover: a class with a
``name`` and an ``async remove(run) -> int`` registered with `register_remover`. A
remover reads the person (`ForgetRun.person`, its identifier values and their
JSON-escaped forms for a substring search), the store client and the settings from the
run, and may leave notes for the removers after it (`ForgetRun.notes`: the streams
remover leaves the ids of the App jobs it removed, whose outcome records go next).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import orjson

from service.config import QueueSettings
from service.errors import FieldError, InvalidRequest
from service.store.connections import AsyncStore
from service.store.tombstones import Tombstones, identifier_digest
from service.store.workspace_control import TriggerSender, record_audit

#: The audit's action for a forget (`service.store.workspace_control.record_audit`).
AUDIT_ACTION = "forget"
#: Longest identifier forget takes (Customer.io's ids are at most 150 bytes, emails 254).
MAX_IDENTIFIER = 1000


class IdType(StrEnum):
    """How an identifier names a person, as Customer.io names them."""

    ID = "id"
    EMAIL = "email"
    CIO_ID = "cio_id"


@dataclass(frozen=True, slots=True)
class Identifier:
    type: IdType
    value: str

    @classmethod
    def parse(cls, text: str) -> Identifier:
        """``email:a@b``, ``id:42``, ``cio_id:03000001``; a bare value with ``@`` is an
        email, any other an id."""
        name, sep, rest = text.partition(":")
        if sep and name in IdType._value2member_map_:
            kind, value = IdType(name), rest
        else:
            kind, value = (IdType.EMAIL if "@" in text else IdType.ID), text
        if not value.strip() or len(value) > MAX_IDENTIFIER:
            raise InvalidRequest.of(
                "person", "format", f"an identifier is 1..{MAX_IDENTIFIER} characters"
            )
        return cls(kind, value)


@dataclass(frozen=True, slots=True)
class Person:
    """One person of one workspace, by every identifier the operator gave."""

    workspace: str
    identifiers: tuple[Identifier, ...]

    @classmethod
    def parse(cls, workspace: str, texts: Sequence[str]) -> Person:
        if not texts:
            raise InvalidRequest.of("person", "required", "name the person: id, email or cio_id")
        found = tuple(dict.fromkeys(Identifier.parse(t) for t in texts))
        return cls(workspace, found)

    @property
    def values(self) -> frozenset[str]:
        return frozenset(i.value for i in self.identifiers)

    @property
    def needles(self) -> tuple[bytes, ...]:
        """Each value as it appears inside a stored JSON string (escaped, unquoted): what
        a substring search finds it by before a job's own subjects confirm it."""
        return tuple(orjson.dumps(v)[1:-1] for v in sorted(self.values))

    @property
    def digest(self) -> str:
        """Names the person in the audit: a digest of the identifiers' digests."""
        parts = sorted(identifier_digest(self.workspace, v) for v in self.values)
        return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


@dataclass(slots=True)
class ForgetRun:
    """One forget in progress: what removers read, and what they leave for each other."""

    person: Person
    redis: AsyncStore
    queue: QueueSettings
    lease_ms: int
    #: Search every shard of every lane, not only those the person's routes map to.
    all_shards: bool = False
    triggers: TriggerSender | None = None
    #: Left by a remover for those after it (e.g. ``app_job_ids``).
    notes: dict[str, Any] = field(default_factory=dict)
    #: Entries that contain an identifier but are not the person's job (kept).
    mentions_kept: int = 0


class Remover(Protocol):
    """Removes the person from one place that holds person data; returns how many items."""

    name: str

    async def remove(self, run: ForgetRun) -> int: ...


REMOVERS: list[Remover] = []


def register_remover(remover: Remover, *, after: str | None = None) -> None:
    """Add `remover` to every forget, last or right after the remover named `after`."""
    if any(r.name == remover.name for r in REMOVERS):
        raise ValueError(f"a remover named {remover.name!r} is registered")
    names = [r.name for r in REMOVERS]
    at = len(REMOVERS) if after is None else names.index(after) + 1
    REMOVERS.insert(at, remover)


def unregister_remover(name: str) -> None:
    REMOVERS[:] = [r for r in REMOVERS if r.name != name]


@dataclass(frozen=True, slots=True)
class ForgetResult:
    digest: str
    #: Items removed, by remover name.
    removed: dict[str, int]
    mentions_kept: int
    tombstone_ttl_s: int
    took_ms: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "person": self.digest,
            "removed": self.removed,
            "mentions_kept": self.mentions_kept,
            "tombstone_ttl_s": self.tombstone_ttl_s,
            "took_ms": self.took_ms,
        }

    @property
    def audit_detail(self) -> str:
        """The audit's line: the digest and the counts, no identifier."""
        counts = ", ".join(f"{k}={v}" for k, v in self.removed.items())
        return f"person {self.digest}: removed {counts}; tombstone {self.tombstone_ttl_s}s"


async def forget(
    run: ForgetRun, *, tombstone_ttl_s: int, removers: Sequence[Remover] | None = None
) -> ForgetResult:
    """Tombstone the person, then run every remover in order. Raises ShardsBusy when a
    shard's lease could not be taken in time (run it again: what was removed stays so)."""
    # The default removers register on import; imported here, as they import this module.
    from service.store import forget_removers  # noqa: F401

    started = time.monotonic()
    await Tombstones(run.redis).record(run.person.workspace, run.person.values, tombstone_ttl_s)
    removed: dict[str, int] = {}
    for remover in REMOVERS if removers is None else removers:
        removed[remover.name] = await remover.remove(run)
    return ForgetResult(
        digest=run.person.digest,
        removed=removed,
        mentions_kept=run.mentions_kept,
        tombstone_ttl_s=tombstone_ttl_s,
        took_ms=int((time.monotonic() - started) * 1000),
    )


def parse_people(raw: Any) -> list[str]:
    """The ``person`` of an admin request: one identifier or a list of one person's."""
    values = [raw] if isinstance(raw, str) else raw
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise InvalidRequest(
            [FieldError("person", "type", "person is an identifier or a list of one person's")]
        )
    return values


class Forgetting:
    """What every surface (CLI, admin API, console) calls: forget, then audit the digest."""

    def __init__(
        self,
        client: AsyncStore,
        queue: QueueSettings,
        *,
        lease_ms: int,
        triggers: TriggerSender | None = None,
    ) -> None:
        self.redis = client
        self.queue = queue
        self.lease_ms = lease_ms
        self.triggers = triggers

    async def forget(
        self, workspace: str, identifiers: Sequence[str], *, who: str, all_shards: bool = False
    ) -> ForgetResult:
        person = Person.parse(workspace, identifiers)
        run = ForgetRun(
            person,
            self.redis,
            self.queue,
            self.lease_ms,
            all_shards=all_shards,
            triggers=self.triggers,
        )
        result = await forget(run, tombstone_ttl_s=self.queue.forget_tombstone_ttl_s)
        # The audit stream is a key of its own: written once the removal is done.
        await record_audit(self.redis, who, AUDIT_ACTION, workspace, "", result.audit_detail)
        return result
