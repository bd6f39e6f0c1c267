"""Riding out a Redis outage in the api: keep trying for ``CIOQ_REDIS_OUTAGE_WAIT_S``
where trying again cannot apply a command twice, instead of answering 503 at once.

- One Redis (`rides_out_outages`): a connection that cannot come up is tried again, with
  a growing pause, until Redis answers or the wait is spent.
- A Redis Cluster (`RidesOutFailovers`, `fails_fast_when_down`): a node that cannot be
  reached may have been replaced (a failover moves its slots to a promoted replica), so
  the connection gives up at once (`NotConnected`) and the client re-reads the topology
  and sends the command again, to whichever node serves its slot, until the wait is spent.

Only what provably did not run is sent again: a command whose connection never came up,
or one refused with CLUSTERDOWN. A timeout or a reset after a command was written is
never retried here (`service.store.connections.RetryIfNotRun`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline as AsyncClusterPipeline
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.commands.cluster import READ_COMMANDS
from redis.exceptions import ClusterDownError, RedisClusterException, SlotNotCoveredError

#: The first and the longest pause between two tries to reach Redis during an outage.
_RECONNECT_FIRST_S = 0.05
_RECONNECT_MAX_S = 0.5

log = logging.getLogger("cioq.redis_outage")


class Outage:
    """When the current outage began (monotonic seconds), None while Redis answers."""

    began_s: float | None = None

    def may_wait(self, pause_s: float, wait_s: float) -> bool:
        """Whether a pause of `pause_s` still ends within `wait_s` of the outage's start
        (which is now, if none was under way)."""
        now_s = time.monotonic()
        if self.began_s is None:
            self.began_s = now_s
        return now_s + pause_s <= self.began_s + wait_s


def rides_out_outages(
    base: type[aioredis.connection.AbstractConnection], wait_s: float
) -> type[aioredis.connection.AbstractConnection]:
    """`base` (a redis-py asyncio connection class) made to keep trying to connect for
    `wait_s` before it gives up.

    A connection that is not up has sent nothing: the command waiting for it did not
    run, so trying again cannot apply it twice, and a Redis restart (a second or so of
    "connection refused", then ``LOADING`` while it reads its AOF) costs the producer a
    slower answer instead of a 503. A ``PING`` ends the connect, so a Redis still
    loading counts as not up yet. Once a command is written nothing here retries it
    (`AsyncRetryIfNotRun` decides).

    The wait is one per outage, not one per connection: it runs from the first failed
    connect, so a request that needs several store calls waits about `wait_s` in all,
    and once it is spent every connect tries once (a 503 at once, no pile of held
    requests) until one succeeds.

    A pooled connection Redis closed or reset while it sat idle is reconnected here,
    before a command is written to it: redis-py 8's pool skips its own check of that when
    "maintenance notifications" are on, and they are by default ("auto").
    """
    outage = Outage()

    class RidesOutOutages(base):  # type: ignore[valid-type,misc]
        async def connect(self) -> None:
            if self.is_connected:
                if not _closed_by_peer(self):
                    return
                await self.disconnect()
            pause_s = _RECONNECT_FIRST_S
            while True:
                try:
                    await super().connect()
                    await self.send_command("PING", check_health=False)
                    await self.read_response()
                    outage.began_s = None
                    return
                except (redis.ConnectionError, redis.TimeoutError):
                    await self.disconnect()
                    if not outage.may_wait(pause_s, wait_s):
                        raise
                await asyncio.sleep(pause_s)
                pause_s = min(pause_s * 2, _RECONNECT_MAX_S)

    RidesOutOutages.__name__ = f"RidesOutOutages{base.__name__}"
    return RidesOutOutages


class NotConnected(redis.ConnectionError):
    """A connection to a cluster node that never came up: nothing was written on it, so
    the command that wanted it did not run and may be sent again, to whichever node
    serves its slot by then."""


def fails_fast_when_down(
    base: type[aioredis.connection.AbstractConnection],
) -> type[aioredis.connection.AbstractConnection]:
    """`base` (a cluster node's connection class) made to raise `NotConnected` when it
    cannot come up (refused, timed out, or ``LOADING``: a ``PING`` ends the connect), or
    when the node closed it while it sat idle, before a command is written to it.

    It does not wait: waiting for the node it was given would outlast a failover that
    moved the node's slots elsewhere. `RidesOutFailovers` waits, and re-reads the
    topology between tries."""

    class FailsFastWhenDown(base):  # type: ignore[valid-type,misc]
        async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
            if self.is_connected:
                if not _closed_by_peer(self):
                    return
                await self.disconnect()
            try:
                await super().connect_check_health(*args, **kwargs)
                await self.send_command("PING", check_health=False)
                await self.read_response()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                await self.disconnect()
                raise NotConnected(str(exc)) from exc

        async def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
            if self.is_connected and _closed_by_peer(self):
                # Not reconnected here: a WATCH on it died with it, and an EXEC on a new
                # connection would run unguarded. Nothing is written: the caller may
                # send the command again, on a connection it asks for anew.
                await self.disconnect()
                raise NotConnected("the node closed the connection while it was idle")
            await super().send_packed_command(*args, **kwargs)

    FailsFastWhenDown.__name__ = f"FailsFastWhenDown{base.__name__}"
    return FailsFastWhenDown


#: Cluster trouble that proves the command did not run: no connection came up to its
#: node, the cluster has no quorum (CLUSTERDOWN, during a failover), or no node serves
#: its slot yet.
OUTAGE_NOT_RUN: tuple[type[Exception], ...] = (NotConnected, ClusterDownError, SlotNotCoveredError)


class RidesOutFailovers(AsyncRedisCluster):
    """The api's cluster client when ``CIOQ_REDIS_OUTAGE_WAIT_S`` is set: a command that
    met `OUTAGE_NOT_RUN` is sent again, the topology re-read first (redis-py does that
    after a connection error), for up to the wait, one per outage as on one Redis; so a
    primary restarted or failed over costs a slower answer, not a 503. A command that
    may have run (a timeout or a reset once written) is never sent again.

    Its pipelines are sent again, whole, only where that cannot apply anything twice
    (`_RidingPipeline`); `service.store.slots` rides out its own per-node pipelines."""

    outage_wait_s: float = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outage = Outage()
        connection_class = fails_fast_when_down(self.connection_kwargs["connection_class"])
        self.connection_kwargs["connection_class"] = connection_class  # nodes found later
        for node in self.nodes_manager.startup_nodes.values():
            # A subclass of the node's own class (redis-py types it as its Connection).
            node.connection_class = connection_class  # type: ignore[assignment]

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)  # refuses a shard hint
        return _RidingPipeline(self, pipe._transaction)  # type: ignore[abstract]  # as redis-py

    async def reread_topology(self) -> None:
        """Ask a live node which node serves which slot (a failed read is logged and
        left to the next try)."""
        try:
            await self.nodes_manager.initialize()
        except (redis.RedisError, RedisClusterException) as exc:
            log.warning("cluster topology could not be re-read: %s", exc)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        pause_s = _RECONNECT_FIRST_S
        while True:
            try:
                reply = await super().execute_command(*args, **kwargs)
            except OUTAGE_NOT_RUN:
                if not self.outage.may_wait(pause_s, self.outage_wait_s):
                    raise
                await asyncio.sleep(pause_s)
                pause_s = min(pause_s * 2, _RECONNECT_MAX_S)
                continue
            self.outage.began_s = None
            return reply


def _closed_by_peer(connection: aioredis.connection.AbstractConnection) -> bool:
    """Whether Redis closed `connection` (a FIN read, or a reset: a Redis killed while it
    had unread bytes from us resets the link instead of closing it).

    It reads redis-py's private streams: its only public check (``can_read_destructive``,
    deprecated in redis-py 8) reads from the socket. tests/integration/store/
    test_closed_by_peer.py fails if an upgrade renames or retypes them."""
    reader = getattr(connection, "_reader", None)
    writer = getattr(connection, "_writer", None)
    if reader is None or writer is None:
        return False
    return bool(reader.at_eof() or reader.exception() is not None or writer.is_closing())


class _RidingPipeline(AsyncClusterPipeline):
    """A pipeline of `RidesOutFailovers`, sent again whole after `OUTAGE_NOT_RUN` (a fresh
    pipeline, the same commands, through redis-py's public calls) where that cannot apply
    anything twice: a transaction (one node, one connection that never came up, or
    refused with CLUSTERDOWN before EXEC ran; not one that WATCHes), or reads only (a
    pipeline over several nodes may have reached the others)."""

    def __init__(self, client: RidesOutFailovers, transaction: bool | None) -> None:
        super().__init__(client, transaction)
        self._riding = client
        self._queued: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self._watched = False

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        self._queued.append((args, dict(kwargs)))
        return super().execute_command(*args, **kwargs)

    async def watch(self, *names: Any) -> None:  # type: ignore[override]  # redis-py's is async
        self._watched = True
        await super().watch(*names)  # type: ignore[no-untyped-call]

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        queued, self._queued = self._queued, []
        if self._transaction:
            again = not self._watched
        else:
            again = all(str(args[0]).upper() in READ_COMMANDS for args, _ in queued)
        client = self._riding
        pipe: AsyncClusterPipeline = self
        pause_s = _RECONNECT_FIRST_S
        while True:
            try:
                replies = await AsyncClusterPipeline.execute(
                    pipe, raise_on_error, allow_redirections
                )
            except OUTAGE_NOT_RUN:
                if not again or not client.outage.may_wait(pause_s, client.outage_wait_s):
                    raise
            else:
                client.outage.began_s = None
                return replies
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, _RECONNECT_MAX_S)
            # redis-py re-reads the topology after a command's connection error, not a
            # pipeline's: without this every try would go to the dead node again.
            await client.reread_topology()
            # What RedisCluster.pipeline builds (mypy takes its class for abstract).
            pipe = AsyncClusterPipeline(client, self._transaction)  # type: ignore[abstract]
            for args, kwargs in queued:
                pipe.execute_command(*args, **kwargs)
