"""Tombstones: the digests of identifiers a workspace was told to forget.

A tombstone is one key per identifier (`keys.forget_tombstone`), holding nothing but its
expiry: the key's name is a digest of the workspace and the value, so Redis keeps no
identifier, and whoever holds an identifier can still ask whether it was forgotten. A
job is a forgotten person's when any identifier its kind names (`JobKind.subjects`) has a
tombstone. Dead-letter replay (`Queue.replay`, every surface's way back into the queue)
drops such letters, and ingest in suppress mode refuses such calls; both count the
drops by where (`keys.forget_dropped`), exported by the metrics endpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Any

import orjson

from service import keys
from service.jobs import Job, job_kind
from service.store.connections import AsyncStore, store_errors

#: The rule an answer names when it refuses a forgotten person's job (replay, ingest).
FORGOTTEN_RULE = "forgotten_person"


class DropPlace(StrEnum):
    """Where a forgotten person's job was dropped (the counter's field, a metric label)."""

    REPLAY = "replay"
    INGEST = "ingest"


def identifier_digest(workspace: str, value: str) -> str:
    """The tombstone's name for `value`: salted by the workspace, so one email forgotten in
    two workspaces leaves two unrelated digests."""
    return hashlib.sha256(f"cioq-forget\0{workspace}\0{value}".encode()).hexdigest()


def job_subjects(kind: str, payload: bytes) -> set[str]:
    """Every identifier a stored job names (empty for a payload that is not JSON)."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return set()
    return {s for s in job_kind(kind).subjects(data) if s}


class Tombstones:
    """Record and consult a workspace's tombstones (asyncio client)."""

    def __init__(self, client: AsyncStore) -> None:
        self.redis = client

    async def record(self, workspace: str, values: Iterable[str], ttl_s: int) -> None:
        """Tombstone every value for `ttl_s`; a second forget renews them."""
        pipe = self.redis.pipeline(transaction=False)
        for value in values:
            pipe.set(
                keys.forget_tombstone(workspace, identifier_digest(workspace, value)), 1, ex=ttl_s
            )
        with store_errors("tombstones"):
            await pipe.execute()

    async def forgotten(self, workspace: str, values: Iterable[str]) -> set[str]:
        """The values among `values` that have a tombstone."""
        wanted = sorted(set(values))
        if not wanted:
            return set()
        names = [keys.forget_tombstone(workspace, identifier_digest(workspace, v)) for v in wanted]
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.exists(name)
        with store_errors("tombstones"):
            found: list[Any] = await pipe.execute()
        return {v for v, hit in zip(wanted, found, strict=True) if hit}

    async def forgotten_jobs(self, workspace: str, jobs: Sequence[Job]) -> list[bool]:
        """For each job, whether it names a forgotten person."""
        subjects = [job_subjects(job.kind, job.payload) for job in jobs]
        gone = await self.forgotten(workspace, set().union(*subjects) if subjects else ())
        return [bool(s & gone) for s in subjects]

    async def count_dropped(self, workspace: str, place: DropPlace, count: int) -> None:
        if count:
            with store_errors("tombstones"):
                await self.redis.hincrby(keys.forget_dropped(workspace), place.value, count)
