"""Forget a person: remove what cioq holds about them, then keep a tombstone.

A person is named by one or more identifiers (``id``, ``email``, ``cio_id``; a bare value
with an ``@`` is an email, any other an id). Forget first records a tombstone per
identifier (`service.store.tombstones`), so a replay or a suppressed ingest that races
the removal already drops the person's jobs; then each *remover* removes the person
from one place that holds person data, in order (`REMOVERS`). What a remover finds is
counted by name in the result and in the audit, which names the person only by a
digest (`service.store.forget_run.Person.digest`), never by an identifier.

Adding a place that holds person data (an index, a cache) is one remover: a class with a
``name`` and an ``async remove(run) -> int`` registered with `register_remover`. A
remover reads the person (`ForgetRun.person`, its identifier values and their
JSON-escaped forms for a substring search), the store client and the settings from the
run, and may leave notes for the removers after it (`ForgetRun.notes`: the streams
remover leaves the ids of the App jobs it removed, whose outcome records go next).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from service.config import QueueSettings
from service.errors import ConfigError, FieldError, InvalidRequest
from service.jobs import Job, lane_traits, registered_lanes
from service.store.connections import AsyncStore
from service.store.forget_removers import DEFAULT_REMOVERS
from service.store.forget_run import ForgetRun, IdType, Person, Remover
from service.store.tombstones import Tombstones
from service.store.workspace_control import TriggerSender, record_audit

#: Stores jobs of a workspace through the normal path; returns how many (`Queue.enqueue`).
Enqueue = Callable[[str, Sequence[Job]], Awaitable[int]]
#: The audit's action for a forget (`service.store.workspace_control.record_audit`).
AUDIT_ACTION = "forget"
#: Every forget runs these, in order; `register_remover` adds one.
REMOVERS: list[Remover] = list(DEFAULT_REMOVERS)


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
    #: Deletes queued to Customer.io (``delete_upstream``).
    upstream_deletes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "person": self.digest,
            "removed": self.removed,
            "mentions_kept": self.mentions_kept,
            "tombstone_ttl_s": self.tombstone_ttl_s,
            "took_ms": self.took_ms,
            "upstream_deletes": self.upstream_deletes,
        }

    @property
    def audit_detail(self) -> str:
        """The audit's line: the digest and the counts, no identifier."""
        counts = ", ".join(f"{k}={v}" for k, v in self.removed.items())
        kept = f"tombstone {self.tombstone_ttl_s}s" if self.tombstone_ttl_s else "no tombstone"
        upstream = f"; {self.upstream_deletes} delete(s) queued to Customer.io" * bool(
            self.upstream_deletes
        )
        return f"person {self.digest}: removed {counts}; {kept}{upstream}"


async def forget(
    run: ForgetRun, *, tombstone_ttl_s: int, removers: Sequence[Remover] | None = None
) -> ForgetResult:
    """Tombstone the person (unless `tombstone_ttl_s` is 0), then run every remover in
    order. Raises ShardsBusy when a shard's lease could not be taken in time (run it
    again: what was removed stays so)."""
    started = time.monotonic()
    if tombstone_ttl_s:
        tombstones = Tombstones(run.redis)
        await tombstones.record(run.person.workspace, run.person.values, tombstone_ttl_s)
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


#: What a delete a producer sends removes (`Forgetting.before_delete`): what is queued
#: or dead for the person, not what Customer.io's own answers or the audit keep.
ON_DELETE = ("pending_jobs", "dead_letters")
#: How long a producer's delete waits for a drain to hand back a shard: a drain holds one
#: for `CIOQ_DRAIN_BUDGET_S` (2 s) at most; a dead worker's would hold up the call.
ON_DELETE_WAIT_MS = 3000
#: The audit's action for that removal.
ON_DELETE_ACTION = "forget_on_delete"


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
        enqueue: Enqueue | None = None,
    ) -> None:
        self.redis = client
        self.queue = queue
        self.lease_ms = lease_ms
        self.triggers = triggers
        #: How delete_upstream queues its jobs (`Queue.enqueue`, the normal lanes' path).
        self.enqueue = enqueue

    async def forget(
        self,
        workspace: str,
        identifiers: Sequence[str],
        *,
        who: str,
        all_shards: bool = False,
        delete_upstream: bool = False,
    ) -> ForgetResult:
        """Forget the person; with `delete_upstream`, then queue their delete to
        Customer.io through the normal lanes: after the removal, so nothing older of
        theirs is left to overtake it (each lane's delete joins the tail of the shard)."""
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
        if delete_upstream:
            result = replace(result, upstream_deletes=await self._delete_upstream(person))
        # The audit stream is a key of its own: written once the removal is done.
        await record_audit(self.redis, who, AUDIT_ACTION, workspace, "", result.audit_detail)
        return result

    async def _delete_upstream(self, person: Person) -> int:
        """Queue each lane's delete of the person, by its best identifier (id, else
        email, else cio_id: Track deletes by one); returns how many were queued."""
        if self.enqueue is None:
            raise ConfigError("delete_upstream needs the queue (Forgetting(enqueue=...))")
        by_type = {i.type: i.value for i in reversed(person.identifiers)}
        best = next(t for t in (IdType.ID, IdType.EMAIL, IdType.CIO_ID) if t in by_type)
        jobs = [
            build(best.value, by_type[best])
            for lane in registered_lanes()
            if (build := lane_traits(lane).person_delete) is not None
        ]
        return await self.enqueue(person.workspace, jobs) if jobs else 0

    async def before_delete(self, person: Person, *, producer: str) -> ForgetResult:
        """A producer's delete of `person` is about to be queued: remove their older
        pending jobs and dead letters first (no tombstone: the producer may add them
        back), so none is sent after it, and audit it as the producer's."""
        run = ForgetRun(
            person,
            self.redis,
            self.queue,
            self.lease_ms,
            triggers=self.triggers,
            wait_ms=ON_DELETE_WAIT_MS,
        )
        chosen = [r for r in REMOVERS if r.name in ON_DELETE]
        result = await forget(run, tombstone_ttl_s=0, removers=chosen)
        who = f"producer:{producer or 'unknown'}"
        detail = result.audit_detail
        await record_audit(self.redis, who, ON_DELETE_ACTION, person.workspace, "", detail)
        return result
