"""Start-up checks of the queue's Redis: does it keep what ingest acknowledges?

- ``durability=fsync`` promises a 2xx only once the job is on disk. Redis ≥ 7.2 proves it
  per write with ``WAITAOF`` (which needs ``appendonly yes``); older Redis can only promise
  it when every write is fsynced before the reply (``appendonly yes`` + ``appendfsync
  always``). Anything else refuses to start: the setting would be a lie.
- ``maxmemory-policy`` must be ``noeviction``: an evicting Redis deletes accepted jobs
  to make room, silently. Production refuses to start; development warns, because a
  developer's Redis is often left at a distribution's default.

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

from service.config import Settings
from service.errors import ConfigError, StoreUnavailable
from service.store.queue import Queue

log = logging.getLogger("cioq.redis_checks")

#: The first Redis with WAITAOF.
WAITAOF_VERSION = (7, 2, 0)
_RETRY_INTERVAL_S = 0.5


@dataclass(frozen=True, slots=True)
class RedisFacts:
    """What the checks need to know about a Redis server."""

    version: tuple[int, ...]
    appendonly: bool
    appendfsync: str | None  # None when CONFIG GET is not allowed (managed Redis)
    maxmemory_policy: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """How the queue must write (WAITAOF or not) and what is worth a warning."""

    use_waitaof: bool
    warnings: tuple[str, ...] = ()


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def facts_from(info: dict[str, Any], config: dict[str, Any] | None) -> RedisFacts:
    """Facts from ``INFO`` and, when allowed, ``CONFIG GET appendfsync``."""
    appendfsync = None
    if config is not None:
        value = config.get("appendfsync")
        appendfsync = str(value) if value is not None else None
    return RedisFacts(
        version=_version(str(info.get("redis_version", "0"))),
        appendonly=int(info.get("aof_enabled", 0)) == 1,
        appendfsync=appendfsync,
        maxmemory_policy=str(info.get("maxmemory_policy", "unknown")),
    )


def evaluate(facts: RedisFacts, settings: Settings) -> Verdict:
    """The verdict for `facts` under `settings`; ConfigError when cioq must not start."""
    warnings: list[str] = []
    if facts.maxmemory_policy != "noeviction":
        message = (
            f"Redis maxmemory-policy is {facts.maxmemory_policy!r}; it must be 'noeviction', "
            "or Redis may evict accepted jobs when memory runs out"
        )
        if settings.env == "production":
            raise ConfigError(message)
        warnings.append(message)
    if settings.durability != "fsync":
        return Verdict(use_waitaof=False, warnings=tuple(warnings))
    if not facts.appendonly:
        raise ConfigError(
            "CIOQ_DURABILITY=fsync needs Redis with 'appendonly yes'; this Redis has AOF off"
        )
    if facts.version >= WAITAOF_VERSION:
        return Verdict(use_waitaof=True, warnings=tuple(warnings))
    if facts.appendfsync != "always":
        shown = facts.appendfsync or "unreadable (CONFIG GET refused)"
        version = ".".join(map(str, facts.version))
        raise ConfigError(
            f"CIOQ_DURABILITY=fsync on Redis {version} (no WAITAOF) needs 'appendfsync always'; "
            f"appendfsync is {shown}"
        )
    return Verdict(use_waitaof=False, warnings=tuple(warnings))


def _report(verdict: Verdict) -> Verdict:
    for warning in verdict.warnings:
        log.warning("%s", warning)
    return verdict


def check_sync(client: redis.Redis, settings: Settings) -> Verdict:
    """Read the facts (waiting up to `startup_redis_wait_s` for Redis) and judge them."""
    deadline = time.monotonic() + settings.startup_redis_wait_s
    while True:
        try:
            info: dict[str, Any] = client.info()
            try:
                config: dict[Any, Any] | None = client.config_get("appendfsync")
            except redis.ResponseError:
                config = None
            break
        except redis.ConnectionError as exc:
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"Redis unreachable at start-up: {exc}") from exc
            time.sleep(_RETRY_INTERVAL_S)
    return _report(evaluate(facts_from(info, _decoded(config)), settings))


async def check_async(
    client: aioredis.Redis, settings: Settings, *, wait_s: float | None = None
) -> Verdict:
    """`check_sync` for an event loop; waits `wait_s` (default: the setting) for Redis."""
    deadline = time.monotonic() + (settings.startup_redis_wait_s if wait_s is None else wait_s)
    while True:
        try:
            info: dict[str, Any] = await client.info()
            try:
                config: dict[Any, Any] | None = await client.config_get("appendfsync")
            except redis.ResponseError:
                config = None
            break
        except redis.ConnectionError as exc:
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"Redis unreachable at start-up: {exc}") from exc
            await asyncio.sleep(_RETRY_INTERVAL_S)
    return _report(evaluate(facts_from(info, _decoded(config)), settings))


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

    def __init__(self, client: aioredis.Redis, settings: Settings, queue: Queue) -> None:
        self.client = client
        self.settings = settings
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
        verdict = await check_async(self.client, self.settings, wait_s=0)
        self.queue.use_waitaof = verdict.use_waitaof
        self.verdict = verdict
