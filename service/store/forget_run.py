"""Who forget is about and what a remover gets: a person by identifiers, one run's state.

Kept apart from `service.store.forget` (which runs the removers) so that the removers,
in `service.store.forget_removers` or in any other module, import only this.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import orjson

from service.config import QueueSettings
from service.errors import InvalidRequest
from service.store.connections import AsyncStore
from service.store.tombstones import identifier_digest
from service.store.workspace_control import TriggerSender

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

    @classmethod
    def named(cls, workspace: str, identifiers: dict[str, str]) -> Person:
        """The person a job names by its identifiers object (``{"id": "42"}``); types
        Customer.io has that forget does not (``anonymous_id``) are read as ids."""
        known = IdType._value2member_map_
        return cls(
            workspace,
            tuple(
                Identifier(IdType(name) if name in known else IdType.ID, value)
                for name, value in identifiers.items()
            ),
        )

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
    #: How long to wait for a shard a drain holds; None: a lease's life and a second
    #: (a dead worker's lease expires by then).
    wait_ms: int | None = None
    #: Left by a remover for those after it (e.g. ``app_job_ids``).
    notes: dict[str, Any] = field(default_factory=dict)
    #: Entries that contain an identifier but are not the person's job (kept).
    mentions_kept: int = 0


class Remover(Protocol):
    """Removes the person from one place that holds person data; returns how many items."""

    name: str

    async def remove(self, run: ForgetRun) -> int: ...
