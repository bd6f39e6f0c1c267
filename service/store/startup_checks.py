"""Start-up checks of the queue's Redis: does it keep what ingest acknowledges?

Each durability level (`service.store.durability`) needs something of every primary:

- ``fsync`` and ``replicated`` promise a 2xx only once the job is on disk. Redis ≥ 7.2 (and
  Valkey) proves it per write with ``WAITAOF``, which needs ``appendonly yes``; older
  Redis can only promise it when every write is fsynced before the reply (``appendonly
  yes`` + ``appendfsync always``). Anything else refuses to start: the setting would lie.
- ``replicated`` also needs at least one connected replica per primary.
- ``replica`` needs only that replica, not AOF: for services without AOF (ElastiCache,
  Memorystore), where ``WAIT 1`` is the strongest confirmation there is.
- ``maxmemory-policy`` must be ``noeviction``: an evicting Redis deletes accepted jobs
  to make room, silently. Production refuses to start; development warns, because a
  developer's Redis is often left at a distribution's default.

In cluster mode (``CIOQ_REDIS_CLUSTER``) every primary is checked, and the drain-trigger
broker must be a standalone Redis: Celery's Redis transport does not follow a cluster.

The worker runs the checks before it takes tasks, waiting up to
``CIOQ_STARTUP_REDIS_WAIT_S`` for Redis. The api does not wait: `StartupGate` checks at
start-up if Redis answers, else on the first write once it does; until then ingest
answers 503, as it would for any Redis outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from service.config import RedisSettings
from service.errors import ConfigError, StoreUnavailable
from service.store.connections import AsyncStore, SyncStore, node_options, tls_options
from service.store.durability import Confirmation
from service.store.queue import Queue

log = logging.getLogger("cioq.redis_checks")

#: The first Redis with WAITAOF. Every Valkey has it: Valkey began as a fork of Redis 7.2.4.
WAITAOF_VERSION = (7, 2, 0)
_RETRY_INTERVAL_S = 0.5


@dataclass(frozen=True, slots=True)
class RedisFacts:
    """What the checks need to know about one Redis server (a primary, in a cluster)."""

    version: tuple[int, ...]
    appendonly: bool
    appendfsync: str | None  # None when CONFIG GET is not allowed (managed Redis)
    maxmemory_policy: str
    replicas: int = 0
    name: str = "Redis"


@dataclass(frozen=True, slots=True)
class Verdict:
    """How the queue must confirm writes (None: no confirmation) and what is worth a warning."""

    confirmation: Confirmation | None
    warnings: tuple[str, ...] = ()


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def facts_from(
    info: dict[str, Any], config: dict[str, Any] | None, name: str = "Redis"
) -> RedisFacts:
    """Facts from ``INFO`` and, when allowed, ``CONFIG GET appendfsync``."""
    appendfsync = None
    if config is not None:
        value = config.get("appendfsync")
        appendfsync = str(value) if value is not None else None
    # Valkey reports ``redis_version:7.2.4`` (the Redis it is compatible with) beside its
    # own ``valkey_version``; its own is read, so a Valkey that stops reporting the first
    # (or reports one older than 7.2) is not taken for a Redis without WAITAOF.
    version = info.get("valkey_version", info.get("redis_version", "0"))
    return RedisFacts(
        version=_version(str(version)),
        appendonly=int(info.get("aof_enabled", 0)) == 1,
        appendfsync=appendfsync,
        maxmemory_policy=str(info.get("maxmemory_policy", "unknown")),
        replicas=int(info.get("connected_slaves", 0)),
        name=name,
    )


def evaluate(facts: RedisFacts, conf: RedisSettings) -> Verdict:
    """The verdict for `facts` under `settings`; ConfigError when cioq must not start."""
    warnings: list[str] = []
    if facts.maxmemory_policy != "noeviction":
        message = (
            f"{facts.name} maxmemory-policy is {facts.maxmemory_policy!r}; it must be "
            "'noeviction', or Redis may evict accepted jobs when memory runs out"
        )
        if conf.env == "production":
            raise ConfigError(message)
        warnings.append(message)
    level = conf.durability
    if level == "write":
        return Verdict(None, tuple(warnings))
    if level == "replica":
        # No disk involved: the promise is "a second server holds it", which a managed
        # service without AOF (ElastiCache, Memorystore) can keep.
        _need_a_replica(facts, level)
        return Verdict(Confirmation(False, 1, conf.durability_timeout_ms), tuple(warnings))
    if not facts.appendonly:
        raise ConfigError(
            f"CIOQ_DURABILITY={level} needs Redis with 'appendonly yes'; {facts.name} has AOF off"
        )
    waitaof = facts.version >= WAITAOF_VERSION
    if not waitaof and facts.appendfsync != "always":
        shown = facts.appendfsync or "unreadable (CONFIG GET refused)"
        version = ".".join(map(str, facts.version))
        raise ConfigError(
            f"CIOQ_DURABILITY={level} on Redis {version} (no WAITAOF) needs 'appendfsync "
            f"always'; {facts.name} has appendfsync {shown}"
        )
    replicas = 1 if level == "replicated" else 0
    if replicas:
        _need_a_replica(facts, level)
    return Verdict(Confirmation(waitaof, replicas, conf.durability_timeout_ms), tuple(warnings))


def _need_a_replica(facts: RedisFacts, level: str) -> None:
    if facts.replicas < 1:
        raise ConfigError(
            f"CIOQ_DURABILITY={level} needs at least one replica per primary; "
            f"{facts.name} has {facts.replicas}"
        )


def evaluate_all(found: list[RedisFacts], conf: RedisSettings) -> Verdict:
    """One verdict for every primary of a cluster: each must pass, and all alike."""
    verdicts = [evaluate(facts, conf) for facts in found]
    confirmations = {v.confirmation for v in verdicts}
    if len(confirmations) > 1:
        raise ConfigError(
            "cluster primaries differ in version or AOF settings, so writes cannot be "
            "confirmed alike: " + ", ".join(f.name for f in found)
        )
    warnings = tuple(w for v in verdicts for w in v.warnings)
    return Verdict(verdicts[0].confirmation if verdicts else None, warnings)


def _report(verdict: Verdict) -> Verdict:
    for warning in verdict.warnings:
        log.warning("%s", warning)
    return verdict


def _facts_sync(client: redis.Redis, name: str) -> RedisFacts:
    info: dict[str, Any] = client.info()
    try:
        config: dict[Any, Any] | None = client.config_get("appendfsync")
    except redis.ResponseError:
        config = None
    return facts_from(info, _decoded(config), name)


def _gather_sync(client: SyncStore) -> list[RedisFacts]:
    if isinstance(client, redis.RedisCluster):
        return [
            _facts_sync(client.get_redis_connection(node), f"primary {node.name}")
            for node in client.get_primaries()  # type: ignore[no-untyped-call]
        ]
    return [_facts_sync(client, "Redis")]


def check_sync(client: SyncStore, conf: RedisSettings) -> Verdict:
    """Read the facts (waiting up to `startup_redis_wait_s` for Redis) and judge them."""
    deadline = time.monotonic() + conf.startup_redis_wait_s
    while True:
        try:
            found = _gather_sync(client)
            break
        except (redis.ConnectionError, redis.exceptions.ClusterError) as exc:
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"Redis unreachable at start-up: {exc}") from exc
            time.sleep(_RETRY_INTERVAL_S)
    check_broker(conf)
    return _report(evaluate_all(found, conf))


def check_broker(conf: RedisSettings) -> None:
    """In cluster mode, refuse a broker that is a cluster node (Celery cannot use one)."""
    if not conf.redis_cluster:
        return
    broker = redis.Redis.from_url(
        conf.celery_broker_url,
        socket_timeout=conf.redis_timeout_s,
        **tls_options(conf.celery_broker_url, conf),
    )
    try:
        enabled = int(broker.info("cluster").get("cluster_enabled", 0))
    except redis.RedisError as exc:
        raise StoreUnavailable(f"the drain-trigger broker is unreachable: {exc}") from exc
    finally:
        broker.close()
    if enabled:
        raise ConfigError(
            "CIOQ_BROKER_URL names a Redis Cluster node; Celery's Redis broker does not "
            "support Redis Cluster: point it at a small standalone Redis"
        )


async def _facts_async(client: aioredis.Redis, name: str) -> RedisFacts:
    info: dict[str, Any] = await client.info()
    try:
        config: dict[Any, Any] | None = await client.config_get("appendfsync")
    except redis.ResponseError:
        config = None
    return facts_from(info, _decoded(config), name)


async def _gather_async(client: AsyncStore) -> list[RedisFacts]:
    if not isinstance(client, AsyncRedisCluster):
        return [await _facts_async(client, "Redis")]
    await client.initialize()
    found = []
    for node in client.get_primaries():
        plain = aioredis.Redis(host=node.host, port=int(node.port), **node_options(client))
        try:
            found.append(await _facts_async(plain, f"primary {node.name}"))
        finally:
            await plain.aclose()
    return found


async def check_async(
    client: AsyncStore, conf: RedisSettings, *, wait_s: float | None = None
) -> Verdict:
    """`check_sync` for an event loop; waits `wait_s` (default: the setting) for Redis."""
    deadline = time.monotonic() + (conf.startup_redis_wait_s if wait_s is None else wait_s)
    while True:
        try:
            found = await _gather_async(client)
            break
        except (redis.ConnectionError, redis.exceptions.ClusterError) as exc:
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"Redis unreachable at start-up: {exc}") from exc
            await asyncio.sleep(_RETRY_INTERVAL_S)
    await asyncio.to_thread(check_broker, conf)
    return _report(evaluate_all(found, conf))


def _decoded(config: dict[Any, Any] | None) -> dict[str, Any] | None:
    if config is None:
        return None
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else v
        )
        for k, v in config.items()
    }


class StartupGate:
    """Holds the api's writes until its Redis passed the checks, then sets up the queue.

    A Redis found unfit at start-up stops the api (`startup` raises ConfigError). Found
    unfit later (it was unreachable at start-up), every write is refused with 503 and the
    reason is logged, because a running server cannot refuse to start any more.
    """

    def __init__(self, client: AsyncStore, conf: RedisSettings, queue: Queue) -> None:
        self.client = client
        self.conf = conf
        self.queue = queue
        self.verdict: Verdict | None = None

    async def startup(self) -> None:
        """Check now if Redis answers; ConfigError when it cannot keep the promise."""
        try:
            await self._check()
        except StoreUnavailable as exc:
            log.warning("Redis unreachable at start-up; writes wait for its checks: %s", exc)

    async def ensure(self) -> None:
        """Return once the checks passed; StoreUnavailable (→ 503) until then."""
        if self.verdict is not None:
            return
        try:
            await self._check()
        except ConfigError as exc:
            log.error("refusing writes: %s", exc)
            raise StoreUnavailable(f"Redis cannot keep the durability promise: {exc}") from exc

    async def _check(self) -> None:
        verdict = await check_async(self.client, self.conf, wait_s=0)
        self.queue.confirmation = verdict.confirmation
        self.verdict = verdict
