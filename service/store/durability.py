"""Durability levels: what is true of a job when ingest answers 2xx, and how it is confirmed.

- ``write``: the primary applied it, in memory. Confirmed by the write's reply.
- ``fsync``: it is in the primary's AOF, on disk. Confirmed by ``WAITAOF 1 0`` (Redis ≥ 7.2,
  Valkey), or by ``appendfsync always`` on older Redis, which fsyncs before it replies.
- ``replicated``: as ``fsync``, and at least one replica received it: then ``WAIT 1``.

``WAIT`` and ``WAITAOF`` only cover writes made *on their own connection*: on a connection
that wrote nothing they return at once and report success. So the confirmation is sent on
the connection that wrote, held from the write to the confirmation. It is a second round
trip, not pipelined behind the write: a replica reports its offsets only when asked or
once a second, and ``WAITAOF`` pipelined right behind a write waited about a second for
that (measured on Valkey 9.1, ``../shared/reference/scale-out.md`` §2.3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from service.errors import StoreUnavailable


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What to wait for after a write, on the writing connection."""

    #: Send ``WAITAOF 1 0``: the write is in this primary's AOF on disk.
    waitaof: bool
    #: Send ``WAIT n``: at least n replicas received the write.
    replicas: int
    timeout_ms: int

    @property
    def needed(self) -> bool:
        return self.waitaof or self.replicas > 0


async def confirm(conn: aioredis.Redis, confirmation: Confirmation) -> None:
    """Wait, on `conn`, until its writes are as durable as asked; else StoreUnavailable."""
    timeout_ms = confirmation.timeout_ms
    if confirmation.waitaof:
        local, _ = await conn.execute_command("WAITAOF", 1, 0, timeout_ms)  # type: ignore[no-untyped-call]
        if int(local) < 1:
            raise StoreUnavailable("WAITAOF: the write was not fsynced to the AOF in time")
    if confirmation.replicas:
        reached = await conn.execute_command("WAIT", confirmation.replicas, timeout_ms)  # type: ignore[no-untyped-call]
        if int(reached) < confirmation.replicas:
            raise StoreUnavailable(
                f"WAIT: the write reached {reached} of {confirmation.replicas} replica(s) in time"
            )


async def run_confirmed(
    client: aioredis.Redis,
    script: AsyncScript,
    keys: Sequence[str],
    args: Sequence[Any],
    confirmation: Confirmation | None,
) -> Any:
    """Run `script`, then confirm its writes on the same connection (if a level asks).

    Redis errors propagate as redis.RedisError; a failed confirmation is StoreUnavailable.
    """
    if confirmation is None or not confirmation.needed:
        return await script(keys=list(keys), args=list(args))
    async with client.client() as conn:
        result = await script(keys=list(keys), args=list(args), client=conn)
        await confirm(conn, confirmation)
    return result
