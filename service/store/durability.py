"""Durability levels: what is true of a job when ingest answers 2xx, and how it is confirmed.

- ``write``: the primary applied it, in memory. Confirmed by the write's reply.
- ``fsync``: it is in the primary's AOF, on disk. Confirmed by ``WAITAOF 1 0`` (Redis ≥ 7.2,
  Valkey), or by ``appendfsync always`` on older Redis, which fsyncs before it replies.
- ``replica``: the primary applied it and at least one replica received it (in memory):
  ``WAIT 1``, no AOF needed. Survives the loss of one node (a failover to that replica),
  not of both, nor a restart of all of them.
- ``replicated``: as ``fsync``, and at least one replica received it: then ``WAIT 1``.

``WAIT`` and ``WAITAOF`` only cover writes made *on their own connection*: on a connection
that wrote nothing they return at once and report success. So the confirmation is
pipelined behind the writes on one connection (`service.store.slots`). ``replicated``
asks ``WAIT`` (the replica received it), not ``WAITAOF 0 1`` (the replica fsynced it):
a replica reports its fsynced offset only once a second unless asked, and ``WAITAOF``
with replicas pipelined behind a write waited about a second for it (measured on Valkey
9.1, ``../shared/reference/scale-out.md`` §2.3), where ``WAIT`` asks at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.commands.core import Script

from service.errors import StoreUnavailable
from service.store.connections import SyncStore, store_errors


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


def commands(confirmation: Confirmation | None) -> list[tuple[Any, ...]]:
    """The commands that confirm a connection's writes, to send on that connection after them."""
    if confirmation is None:
        return []
    timeout_ms = confirmation.timeout_ms
    found: list[tuple[Any, ...]] = []
    if confirmation.waitaof:
        found.append(("WAITAOF", 1, 0, timeout_ms))
    if confirmation.replicas:
        found.append(("WAIT", confirmation.replicas, timeout_ms))
    return found


def verify(confirmation: Confirmation | None, replies: Sequence[Any]) -> None:
    """StoreUnavailable unless the replies to `commands` confirm the level."""
    if confirmation is None:
        return
    replies = list(replies)
    for reply in replies:
        if isinstance(reply, Exception):
            raise StoreUnavailable(f"the write could not be confirmed: {reply}")
    if confirmation.waitaof and int(replies.pop(0)[0]) < 1:
        raise StoreUnavailable("WAITAOF: the write was not fsynced to the AOF in time")
    if confirmation.replicas and int(replies.pop(0)) < confirmation.replicas:
        raise StoreUnavailable(
            f"WAIT: the write did not reach {confirmation.replicas} replica(s) in time"
        )


def run_confirmed(
    client: SyncStore,
    confirmation: Confirmation | None,
    script: Script,
    lua_keys: list[Any],
    args: list[Any],
) -> Any:
    """Run `script` and, when the level asks for it, confirm its write at that level:
    ``WAITAOF``/``WAIT`` pipelined behind it on the same connection (on a cluster, the
    node that owns ``lua_keys[0]``; the script's keys share its slot). The script's
    reply; StoreUnavailable when the script failed or its write was not confirmed."""
    if confirmation is None or not confirmation.needed:
        return script(keys=lua_keys, args=args)
    if isinstance(client, redis.RedisCluster):
        owner = client.get_node_from_key(lua_keys[0])  # type: ignore[no-untyped-call]
        node: redis.Redis = client.get_redis_connection(owner)
    else:
        node = client
    pipe = node.pipeline(transaction=False)
    script(keys=lua_keys, args=args, client=pipe)
    for command in commands(confirmation):
        pipe.execute_command(*command)  # type: ignore[no-untyped-call]
    with store_errors("confirming a write"):
        replies = pipe.execute(raise_on_error=False)
        if isinstance(replies[0], Exception):
            raise replies[0]
    verify(confirmation, replies[1:])
    return replies[0]
