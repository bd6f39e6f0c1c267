"""Run one-slot script calls where their slot lives, confirmed on the connection that wrote.

Every write path of ingest (enqueue, Idempotency-Key requests, dead-letter replay) is cut
into *parts*: one ``lua/enqueue.lua`` call per shard, whose keys all carry the shard's
hash tag. `SlotWriter.run` sends the parts of one node as one pipeline on one connection,
followed by the durability level's ``WAITAOF``/``WAIT`` (`service.store.durability`), so
the confirmation covers exactly the writes it vouches for.

- Standalone Redis: one node, one script call, one round trip for the whole group.
- Redis Cluster: one pipeline per primary, sent concurrently, over a connection per node
  (redis-py's cluster client will neither pipeline scripts nor send WAIT to the node that
  wrote). A part refused with MOVED, ASK, TRYAGAIN or CLUSTERDOWN wrote nothing: the
  topology is re-read and the part is sent again, a few times, then reported failed.

Every call goes over `service.store.wire` (a pipelined connection of its own, ~40 µs of
CPU per call below redis-py's client), whose errors are redis-py's exceptions.

A part that fails leaves the others stored; the caller answers 503 and the producer's
retry completes the request, its stored parts skipped by their request markers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha1
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    NoScriptError,
    RedisClusterException,
    TryAgainError,
)

from service.errors import StoredUnconfirmed, StoreUnavailable
from service.store import durability
from service.store.connections import (
    AsyncStore,
    lua_source,
    node_options,
    store_errors,
)
from service.store.durability import Confirmation
from service.store.outages import NotConnected, RidesOutFailovers
from service.store.wire import Address, Wire

log = logging.getLogger("cioq.slots")

#: A cluster client's timeouts, which its nodes' connections keep.
_TIMEOUTS = ("socket_timeout", "socket_connect_timeout")
#: Rounds of sending refused parts again after a topology change, and the first pause.
REDIRECT_ROUNDS = 6
REDIRECT_PAUSE_S = 0.05
REDIRECT_PAUSE_MAX_S = 0.8
#: Replies that wrote nothing (MovedError is an AskError), and a node that could not be
#: reached at all (no connection came up: nothing was sent).
_REFUSED = (AskError, TryAgainError, ClusterDownError, NotConnected)
#: Of those, what an outage gives (a node down, the cluster without quorum while a
#: replica is promoted): sent again for up to the outage wait, not a few rounds.
_OUTAGE = (NotConnected, ClusterDownError)


@dataclass(frozen=True, slots=True)
class Part:
    """One script call whose keys all share one slot; ``keys[0]`` locates it."""

    keys: list[str]
    args: list[Any]


class SlotWriter:
    """Sends parts to their nodes, one pipeline per node, and confirms them there."""

    def __init__(
        self, client: AsyncStore, script: str, *, seed_url: str, outage_wait_s: float = 0.0
    ) -> None:
        """`outage_wait_s`: how long a standalone Redis that cannot be reached is tried
        again before a write fails (``CIOQ_REDIS_OUTAGE_WAIT_S``); a cluster's nodes fail
        fast and `run` rides the outage out, re-reading the topology."""
        self.client = client
        self.confirmation: Confirmation | None = None
        self._source = lua_source(script)
        self._sha = sha1(self._source.encode()).hexdigest()
        self._seed_url = seed_url
        self._nodes: dict[str, Wire] = {}
        self._refresh: asyncio.Lock = asyncio.Lock()
        self._pending_refresh: asyncio.Task[None] | None = None  # kept from collection
        # Asked once: redis-py's client classes carry typing Protocols, so each isinstance
        # on them costs ~1 µs, and the write path asked several times per call.
        self._cluster = client if isinstance(client, AsyncRedisCluster) else None
        self._riding = client if isinstance(client, RidesOutFailovers) else None
        self._plain = client if isinstance(client, aioredis.Redis) else None
        self._wire = (
            Wire(Address.of(self._plain), outage_wait_s=outage_wait_s) if self._plain else None
        )

    async def run(self, parts: Sequence[Part]) -> list[Any]:
        """Each part's reply, or the exception (StoreUnavailable) that kept it from being stored.

        Never raises for one part's trouble: the caller decides per request.
        """
        if self._cluster is not None:
            with store_errors("cluster topology"):
                await self._cluster.initialize()  # once; at once after the first time
        results: list[Any] = [None] * len(parts)
        pending = list(range(len(parts)))
        pause_s = REDIRECT_PAUSE_S
        asking: dict[int, tuple[str, int]] = {}
        round_no = 0
        while True:
            refused = await self._round(parts, pending, asking, results)
            if not refused:
                if self._riding is not None:
                    self._riding.outage.began_s = None
                return results
            pending = refused
            round_no += 1
            if round_no >= REDIRECT_ROUNDS and not self._rides_out(pending, results, pause_s):
                break
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, REDIRECT_PAUSE_MAX_S)
            await self._reread_topology()
        for index in pending:
            results[index] = StoreUnavailable(f"slot kept moving: {results[index]}")
        return results

    def _rides_out(self, pending: list[int], results: list[Any], pause_s: float) -> bool:
        """Whether to keep sending parts whose node could not be reached or whose cluster
        was down: within the outage wait of a client that rides out failovers (the node
        may come back, or a replica take over its slots)."""
        if self._riding is None:
            return False
        if not any(isinstance(results[i], _OUTAGE) for i in pending):
            return False
        return self._riding.outage.may_wait(pause_s, self._riding.outage_wait_s)

    async def _round(
        self,
        parts: Sequence[Part],
        pending: list[int],
        asking: dict[int, tuple[str, int]],
        results: list[Any],
    ) -> list[int]:
        """Send `pending` parts once; returns those refused by a redirect, to send again."""
        by_node: dict[tuple[str, int] | None, list[int]] = defaultdict(list)
        asked: set[int] = set()
        for index in pending:
            target = asking.pop(index, None)
            if target is not None:
                asked.add(index)
            by_node[target or self._node_of(parts[index])].append(index)
        sends = [
            self._send(node, [parts[i] for i in indexes], [i in asked for i in indexes])
            for node, indexes in by_node.items()
        ]
        # One node (always, on a standalone Redis): no task to gather it in.
        outcomes = [await sends[0]] if len(sends) == 1 else await asyncio.gather(*sends)
        refused: list[int] = []
        for indexes, replies in zip(by_node.values(), outcomes, strict=True):
            for index, reply in zip(indexes, replies, strict=True):
                results[index] = reply
                if isinstance(reply, _REFUSED):
                    refused.append(index)
                    if type(reply) is AskError:
                        asking[index] = (reply.host, reply.port)
        return refused

    def _node_of(self, part: Part) -> tuple[str, int] | None:
        if self._cluster is None:
            return None
        with store_errors("cluster topology"):
            node = self._cluster.get_node_from_key(part.keys[0])
        if node is None:
            raise StoreUnavailable(f"no node serves the slot of {part.keys[0]}")
        return node.host, int(node.port)

    async def _send(
        self, node: tuple[str, int] | None, parts: list[Part], asked: list[bool]
    ) -> list[Any]:
        """One pipeline: the parts, then the confirmation; a reply or exception per part.

        A part `asked` was redirected by ASK to this node, which serves it only after ASKING.
        """
        client = self._client_for(node)
        mine: list[Any] = [None] * len(parts)
        todo = list(range(len(parts)))
        failure: StoreUnavailable | None = None
        for _ in range(2):
            replies = await self._pipeline(client, node, [(parts[i], asked[i]) for i in todo])
            if isinstance(replies, StoreUnavailable):
                for i in todo:
                    mine[i] = replies
                break
            written, confirmed = replies
            for i, reply in zip(todo, written, strict=True):
                mine[i] = reply
            if confirmed is not None:
                failure = failure or confirmed
            # Only the parts NOSCRIPT refused are sent again: another process's SCRIPT
            # LOAD may have landed between two parts, and a part stored must not be again.
            todo = [i for i in todo if isinstance(mine[i], NoScriptError)]
            if not todo:
                break
            with store_errors(f"{node or 'redis'}: SCRIPT LOAD"):
                # A new, restarted or promoted node.
                (loaded,) = await client.call([("SCRIPT", "LOAD", self._source)])
                if isinstance(loaded, Exception):
                    raise loaded
        if failure is not None:
            # A part the script applied is queued all the same: say so, so that an App
            # send is not answered 5xx (its client would resend it).
            return [
                r
                if isinstance(r, _REFUSED)
                else failure
                if isinstance(r, Exception)
                else StoredUnconfirmed(str(failure), reply=r)
                for r in mine
            ]
        return [_part_outcome(r) for r in mine]

    async def _pipeline(
        self, client: Wire, node: tuple[str, int] | None, parts: list[tuple[Part, bool]]
    ) -> tuple[list[Any], StoreUnavailable | None] | StoreUnavailable:
        """Send `parts` then the confirmation on one connection: each part's reply and the
        confirmation's failure (None when confirmed), or the error that broke the link."""
        confirm = durability.commands(self.confirmation)
        # A call per part on a cluster (a script's keys share one slot); one call for
        # them all on a standalone Redis: one command to pack and one reply to parse.
        calls = [[p] for p in parts] if node is not None else [parts]
        commands: list[tuple[Any, ...]] = []
        positions = []
        for call in calls:
            if call[0][1]:
                commands.append(("ASKING",))
            positions.append(len(commands))
            header: list[Any] = [len(call)]
            call_keys: list[str] = []
            call_args: list[Any] = []
            for part, _ in call:
                header += (len(part.keys), len(part.args))
                call_keys += part.keys
                call_args += part.args
            commands.append(("EVALSHA", self._sha, len(call_keys), *call_keys, *header, *call_args))
        commands += confirm
        # Each confirmation may block up to its own timeout, one after the other.
        blocking_ms = self.confirmation.timeout_ms * len(confirm) if self.confirmation else 0
        try:
            replies = await client.call(commands, blocking_ms=blocking_ms)
        except NotConnected as exc:
            return [exc] * len(parts), None  # nothing sent: each part is refused
        except redis.RedisError as exc:
            # The connection broke: any part may or may not be stored. Re-read the
            # topology, so the producer's retry finds a promoted replica.
            self._pending_refresh = asyncio.create_task(self._reread_topology())
            return StoreUnavailable(f"{node or 'redis'}: {exc}")
        written: list[Any] = []
        for call, position in zip(calls, positions, strict=True):
            reply = replies[position]
            # The call's error (NOSCRIPT, a refusal) is each of its parts'.
            written += [reply] * len(call) if isinstance(reply, Exception) else reply
        try:
            durability.verify(self.confirmation, replies[len(replies) - len(confirm) :])
        except StoreUnavailable as exc:
            return written, exc
        return written, None

    def _client_for(self, node: tuple[str, int] | None) -> Wire:
        if node is None:
            assert self._wire is not None
            return self._wire
        name = f"{node[0]}:{node[1]}"
        wire = self._nodes.get(name)
        if wire is None:
            tls = node_options(self._cluster, tls_only=True) if self._cluster is not None else {}
            timeouts = {}
            if self._cluster is not None:
                kwargs = self._cluster.connection_kwargs
                timeouts = {k: kwargs[k] for k in _TIMEOUTS if k in kwargs}
            # A redis-py client only to read the node's URL as redis-py would.
            reading = aioredis.Redis.from_url(_node_url(self._seed_url, *node), **tls, **timeouts)
            wire = Wire(Address.of(reading), fail_fast=self._riding is not None)
            self._nodes[name] = wire
        return wire

    async def _reread_topology(self) -> None:
        if self._cluster is None:
            return
        cluster = self._cluster
        if self._refresh.locked():  # another part is already re-reading it
            async with self._refresh:
                return
        async with self._refresh:
            try:
                await cluster.nodes_manager.initialize()
            except (redis.RedisError, RedisClusterException) as exc:
                log.warning("cluster topology could not be re-read: %s", exc)

    async def aclose(self) -> None:
        for wire in self._nodes.values():
            await wire.aclose()
        self._nodes.clear()
        if self._wire is not None:
            await self._wire.aclose()


def _part_outcome(reply: Any) -> Any:
    if isinstance(reply, _REFUSED):
        return reply
    if isinstance(reply, Exception):
        return StoreUnavailable(str(reply))
    return reply


def _node_url(seed_url: str, host: str, port: int) -> str:
    """The seed URL (scheme, credentials, options) pointed at one node, database 0."""
    parts = urlsplit(seed_url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, "/0", parts.query, ""))
