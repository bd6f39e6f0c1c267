"""Crash points: fail the N-th Redis round trip of a path through cioq, for every N.

`Faults` wraps redis-py in this process (sync and asyncio, single commands and
pipelines, so Lua script calls too) and the ingest write path's own connection
(`service.store.wire`), and counts every round trip. Armed at point N, it
makes the N-th one fail the way redis-py would fail it:

- ``reset``: a ConnectionError before the command is sent (nothing applied);
- ``timeout``: a TimeoutError after Redis ran it (applied, the reply lost);
- ``noscript``: the script cache is flushed just before (as after a restart or a
  failover), so an EVALSHA gets NOSCRIPT;
- ``stall``: the drain is paused there past its lease: the lease expires and a second
  drain runs to the end before the first goes on (sync calls, the drain's, only).

At durability ``fsync`` on a server with WAITAOF (`FSYNC_MODES`) one more:

- ``unfsynced``: the N-th round trip that carries a ``WAITAOF`` gets the answer of one
  whose timeout ran out before an fsync (``[0, 0]``): the write applied, unconfirmed.

On a Redis Cluster (`CLUSTER_MODES`) two more, where redis-py's cluster client meets them:

- ``moved``: from this round trip on, every cluster client's map of slots is stale (as
  after a resharding or a failover): each command goes to a node that answers MOVED,
  and redis-py (or the store's own pipelines) follows the redirect;
- ``tryagain``: redis-py gives up on a slot in migration (``TryAgainError``) before the
  command ran, as it does once its redirect budget is spent.

`DrainedPath` is what every path shares: the api in a thread, two drainers (one drains
under faults, the other takes over a stalled drain and recovers), and recovery (leases
expire, pauses end, drains run without faults). The paths: the App send
(`tests.support.app_send_path`), Track and Pipelines (`tests.support.ordered_paths`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import redis
import redis.asyncio.client as async_client
import redis.asyncio.cluster as async_cluster
import redis.client as sync_client
import redis.cluster as sync_cluster
from redis.exceptions import TryAgainError

from service import keys
from service.config import Settings
from service.jobs import Lane
from service.store.connections import SyncStore
from service.store.durability import Confirmation
from service.store.wire import Wire
from tests.support.drain import build_drainer
from tests.support.streams import stream_fields

MODES = ("reset", "timeout", "noscript", "stall")
CLUSTER_MODES = (*MODES, "moved", "tryagain")
FSYNC_MODES = (*MODES, "unfsynced")


class Faults:
    """Counts this process's Redis round trips and fails the armed one."""

    def __init__(self, redis_url: str, *, primaries: Callable[[], list[str]] | None = None) -> None:
        self._url = redis_url
        #: The URLs whose script caches ``noscript`` empties (a cluster's primaries).
        self._primaries = primaries or (lambda: [redis_url])
        #: The cluster clients seen running commands: ``moved`` makes their slot maps stale.
        self._clusters: list[Any] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self.count = 0
        self.targets: frozenset[int] = frozenset()
        self.mode = ""
        #: Round trips carrying a WAITAOF so far (``unfsynced`` counts its points in these).
        self.confirmations = 0
        #: What the armed point hit (a command name, or PIPELINE[...]), once it fired.
        self.hit: str | None = None
        self.on_stall: Callable[[], None] = lambda: None

    def arm(self, targets: frozenset[int], mode: str) -> None:
        """Fail the round trips numbered `targets` (1 = the first) in `mode`."""
        with self._lock:
            self.count, self.targets, self.mode, self.hit = 0, targets, mode, None
            self.confirmations = 0

    def disarm(self) -> int:
        with self._lock:
            counted, self.targets = self.count, frozenset()
        return counted

    @contextmanager
    def bypass(self) -> Iterator[None]:
        """Round trips here are neither counted nor failed (the harness's own reads)."""
        before = getattr(self._local, "bypass", False)
        self._local.bypass = True
        try:
            yield
        finally:
            self._local.bypass = before

    def _due(self, name: str, *, sync: bool, client: Any = None) -> str | None:
        if getattr(self._local, "bypass", False):
            return None
        if client is not None and all(client is not c for c in self._clusters):
            self._clusters.append(client)
        with self._lock:
            if not self.targets:
                return None
            self.count += 1
            if self.mode == "unfsynced":
                # Numbered among the round trips that carry a WAITAOF, so each of them is
                # hit whatever the api's periodic reads add around it.
                if "WAITAOF" not in name:
                    return None
                self.confirmations += 1
                if self.confirmations not in self.targets:
                    return None
            elif self.count not in self.targets:
                return None
            if self.mode == "stall" and not sync:
                return None
            self.hit = name
            return self.mode

    def _before(self, mode: str | None) -> None:
        if mode == "reset":
            raise redis.ConnectionError("Connection reset by peer (injected)")
        if mode == "tryagain":
            raise TryAgainError("Multiple keys request during rehashing of slot (injected)")
        if mode == "moved":
            for client in self._clusters:
                _stale_slots(client.nodes_manager.slots_cache)
        if mode == "noscript":
            for url in self._primaries():
                with self.bypass(), redis.Redis.from_url(url) as raw:
                    raw.script_flush()
        if mode == "stall":
            with self.bypass():
                self.on_stall()

    @staticmethod
    def _after(mode: str | None, names: list[str] | None, reply: Any) -> Any:
        """The reply the caller gets; `names` are a pipeline's commands (None: one command)."""
        if mode == "timeout":
            raise redis.TimeoutError("Timeout reading from socket (injected)")
        if mode == "unfsynced":
            # WAITAOF's answer when no fsync came within its timeout: [local AOFs, replicas].
            if names is None:
                return [0, 0]
            return [[0, 0] if n == "WAITAOF" else r for n, r in zip(names, reply, strict=True)]
        return reply

    def install(self, patch: Callable[[Any, str, Any], None]) -> None:
        """Wrap redis-py's round trips, of the standalone and the cluster clients, sync and
        asyncio; `patch` is pytest's ``monkeypatch.setattr``. The cluster clients reach
        their nodes without the plain clients' execute_command, so each is wrapped too;
        their pipelines are the store's transactions."""
        for client_class, pipeline_class, sync, cluster in (
            (sync_client.Redis, sync_client.Pipeline, True, False),
            (async_client.Redis, async_client.Pipeline, False, False),
            (sync_cluster.RedisCluster, sync_cluster.ClusterPipeline, True, True),
            (async_cluster.RedisCluster, async_cluster.ClusterPipeline, False, True),
        ):
            execute = client_class.execute_command
            execute_pipeline = pipeline_class.execute
            patch(client_class, "execute_command", self._wrap(execute, sync, cluster=cluster))
            patch(pipeline_class, "execute", self._wrap(execute_pipeline, sync, pipeline=True))
        patch(Wire, "call", self._wrap_wire(Wire.call))

    def _wrap_wire(self, original: Any) -> Callable[..., Any]:
        """The ingest write path's own connection (`service.store.wire`): one round trip
        per call, named as redis-py's would be (a lone command, or a pipeline)."""
        faults = self

        async def call(wire: Any, commands: Any, **options: Any) -> Any:
            names = [str(c[0]) for c in commands]
            name = names[0] if len(names) == 1 else "PIPELINE[" + ",".join(names) + "]"
            mode = faults._due(name, sync=False)
            faults._before(mode)
            return faults._after(mode, names, await original(wire, commands, **options))

        return call

    def _wrap(
        self, original: Any, sync: bool, *, pipeline: bool = False, cluster: bool = False
    ) -> Callable[..., Any]:
        """`original` (a client's execute_command or a pipeline's execute) counting its
        round trips and failing the armed one. A cluster client is remembered, for
        ``moved``; an empty pipeline sends nothing, so it is passed through uncounted."""
        faults = self

        def due(client: Any, args: tuple[Any, ...]) -> tuple[bool, list[str] | None, str | None]:
            names: list[str] | None = None
            if pipeline:
                names = _stack_names(client)
                if not names:
                    return False, names, None
                name = "PIPELINE[" + ",".join(names) + "]"
            else:
                name = str(args[0])
            mode = faults._due(name, sync=sync, client=client if cluster else None)
            return True, names, mode

        if sync:

            def wrapped(client: Any, *args: Any, **options: Any) -> Any:
                sends, names, mode = due(client, args)
                if not sends:
                    return original(client, *args, **options)
                faults._before(mode)
                return faults._after(mode, names, original(client, *args, **options))

            return wrapped

        async def awrapped(client: Any, *args: Any, **options: Any) -> Any:
            sends, names, mode = due(client, args)
            if not sends:
                return await original(client, *args, **options)
            faults._before(mode)
            return faults._after(mode, names, await original(client, *args, **options))

        return awrapped


def _stale_slots(cache: dict[int, list[Any]]) -> None:
    """Point every slot of `cache` at the next primary's nodes: each command then meets a
    MOVED, which is how a client learns of a resharding or a failover."""
    by_primary: dict[str, list[Any]] = {}
    for nodes in cache.values():
        by_primary.setdefault(nodes[0].name, nodes)
    names = sorted(by_primary)
    if len(names) < 2:
        return
    shifted = {name: by_primary[names[(i + 1) % len(names)]] for i, name in enumerate(names)}
    for slot, nodes in list(cache.items()):
        cache[slot] = shifted[nodes[0].name]


def _stack_names(pipeline: Any) -> list[str]:
    """The command names a pipeline is about to send (empty: it sends nothing). redis-py
    keeps an asyncio cluster pipeline's commands in its execution strategy."""
    stack = getattr(pipeline, "command_stack", None)
    if stack is None:
        stack = getattr(pipeline._execution_strategy, "_command_queue", [])
    names = []
    for item in stack:
        args = item[0] if isinstance(item, tuple) else getattr(item, "args", ())
        names.append(str(args[0]) if args else "?")
    return names


class DrainedPath:
    """A path of `lane` run in this process: the api at `api_url`, drains against `client`."""

    def __init__(
        self,
        lane: Lane,
        settings: Settings,
        api_url: str,
        client: SyncStore,
        faults: Faults,
        *,
        confirmation: Confirmation | None = None,
    ) -> None:
        self.lane = lane
        self.settings = settings
        self.redis = client
        self.faults = faults
        faults.on_stall = self._stalled
        # Two workers, each built once (a drainer's HTTP clients take ~70 ms to build): the
        # first drains under faults, the second takes over stalled drains and recovers.
        self._first = build_drainer(settings, client)
        self._second = build_drainer(settings, client)
        # As a worker does (workers/celery_app.py): the in-flight note and the dead
        # letters confirmed at the level ingest confirms jobs at (WAIT/WAITAOF).
        for drainer in (self._first, self._second):
            drainer.store.confirmation = drainer.dead.confirmation = confirmation
        self._api = httpx.Client(base_url=api_url, timeout=15)

    def close(self) -> None:
        self._api.close()
        for drainer in (self._first, self._second):
            for sender in drainer.clients.values():
                sender.close()

    def _reset(self) -> None:
        with self.faults.bypass():
            if isinstance(self.redis, redis.RedisCluster):
                self.redis.flushdb(target_nodes=redis.RedisCluster.PRIMARIES)
            else:
                self.redis.flushdb()

    def _drain_once(self) -> None:
        for shard in range(self.settings.queue.shards):
            try:
                self._first.drain("default", shard, self.lane)
            except Exception:  # the worker task dies (Celery logs it); recovery follows
                continue

    def _stalled(self) -> None:
        """The drain is stuck at this step past its lease: another drain takes over."""
        for key in self.redis.scan_iter(match="cioq:lease:*"):
            self.redis.delete(key)
        self._drain_all()

    def _drain_all(self) -> None:
        for shard in range(self.settings.queue.shards):
            shard_keys = keys.shard_keys("default", shard, self.lane)
            if self.redis.xlen(shard_keys.stream):
                self._second.drain("default", shard, self.lane)

    def _recover(self) -> None:
        """Time passes without faults: leases expire, pauses end, drains run again."""
        for _ in range(6):
            self._expire()
            if not self._queued():
                return
            self._drain_all()

    def _expire(self) -> None:
        """Leases, pauses, backoffs and rate slots run out (time passes)."""
        for pattern in ("cioq:lease:*", "cioq:pause:*", "cioq:retry:*", "cioq:bucket:*"):
            for key in self.redis.scan_iter(match=pattern):
                self.redis.delete(key)

    def _queued(self) -> list[dict[str, Any]]:
        """Every job still queued in the lane's streams (its payload)."""
        found: list[dict[str, Any]] = []
        for shard in range(self.settings.queue.shards):
            stream = keys.shard_keys("default", shard, self.lane).stream
            for fields in stream_fields(self.redis, stream):
                found.extend(orjson.loads(value) for value in fields.values())
        return found

    def _letters(self) -> list[dict[str, Any]]:
        return [
            orjson.loads(fields[b"payload"])
            for fields in stream_fields(self.redis, keys.dead_letters("default"))
        ]
