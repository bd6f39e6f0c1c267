"""Connections to the queue's Redis, its Lua scripts, and the one place Redis errors
become cioq errors.

Every store module wraps its Redis calls in `store_errors()` (the shape of httpx's
``map_httpcore_exceptions``): callers above the store see `StoreUnavailable`, never a
redis-py exception, and a change of client library touches this module only.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import hiredis
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.retry import Retry

from service.config import RedisSettings
from service.errors import StoreUnavailable
from service.store.outages import RidesOutFailovers, rides_out_outages

#: What redis-py raises for store trouble. RedisClusterException (no node for a slot,
#: topology unreadable) is not a RedisError, but it is store trouble all the same.
STORE_ERRORS = (redis.RedisError, RedisClusterException)


@contextmanager
def store_errors(context: str = "") -> Iterator[None]:
    """Translate redis-py errors raised inside the block into `StoreUnavailable`.

    ``WatchError`` passes through: it is an optimistic transaction's signal to retry,
    which the caller handles, not store trouble.
    """
    try:
        yield
    except redis.WatchError:
        raise
    except STORE_ERRORS as exc:
        raise StoreUnavailable(f"{context}: {exc}" if context else str(exc)) from exc
    except AttributeError as exc:
        # During a failover redis-py's asyncio cluster client can write to a connection a
        # concurrent failure just tore down ("'NoneType' object has no attribute
        # 'writelines'"): raised inside redis-py, that is store trouble (503), not a 500.
        if not _raised_in_redis_py(exc):
            raise
        raise StoreUnavailable(f"{context}: {exc}" if context else str(exc)) from exc


_REDIS_PY_DIR = str(Path(redis.__file__).parent)


def _raised_in_redis_py(exc: BaseException) -> bool:
    """Whether the innermost frame of `exc`'s traceback is redis-py's own code."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.startswith(_REDIS_PY_DIR)


def tls_options(url: str, conf: RedisSettings) -> dict[str, Any]:
    """redis-py's TLS options for `url`: none for ``redis://``; for ``rediss://`` the
    certificate and host name are verified, against ``CIOQ_REDIS_CA_FILE`` when set
    (a private CA), else the system's trust store. Said explicitly rather than left to
    redis-py's defaults, so a library upgrade cannot turn verification off unnoticed."""
    if urlsplit(url).scheme != "rediss":
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if conf.redis_ca_file:
        options["ssl_ca_certs"] = conf.redis_ca_file
    return options


_TLS_NAMES = ("ssl_cert_reqs", "ssl_check_hostname", "ssl_ca_certs")


def node_options(client: AsyncRedisCluster, *, tls_only: bool = False) -> dict[str, Any]:
    """Credentials and TLS options of a cluster client, for a plain client to one of its
    nodes (`tls_only` when a node URL already carries scheme and credentials)."""
    kwargs = client.connection_kwargs
    names = _TLS_NAMES if tls_only else ("username", "password", *_TLS_NAMES)
    options = {k: kwargs[k] for k in names if k in kwargs}
    # The cluster client keeps TLS as its connection class, not as an ``ssl`` flag.
    connection_class = kwargs.get("connection_class")
    if not tls_only and isinstance(connection_class, type):
        options["ssl"] = issubclass(connection_class, aioredis.SSLConnection)
    return options


#: Replies that prove Redis did not run a command, so sending it again cannot apply it
#: twice: a redirect (MOVED, ASK), a slot mid-migration (TRYAGAIN), a cluster without a
#: quorum (CLUSTERDOWN).
NOT_RUN_ERRORS: tuple[type[RedisError], ...] = (
    MovedError,
    AskError,
    TryAgainError,
    ClusterDownError,
)

#: How many times a command refused by one of `NOT_RUN_ERRORS` is sent again where the
#: policy below decides (a cluster transaction); plain commands follow redirects in
#: redis-py's own loop, bounded by its request TTL.
NOT_RUN_RETRIES = 5


def _only_not_run(errors: Iterable[type[Exception]]) -> tuple[type[Exception], ...]:
    return tuple({e for e in errors if issubclass(e, NOT_RUN_ERRORS)})


class RetryIfNotRun(Retry):
    """A retry policy that never sends again a command that may have run.

    After a timeout or a connection dropped once a command was written, nobody knows
    whether Redis ran it. redis-py's default policy (10 tries) sends it again, so
    ``acquire.lua`` finds its own lease and returns "held" (a shard stalled for a
    lease), a dead letter's ``XADD`` or an enqueue lands twice (audit F10). Only replies
    in `NOT_RUN_ERRORS` are retried; anything else reaches `store_errors`, and the
    caller, which knows whether its step is idempotent, decides.

    ``get_retries()`` is 0 because redis-py's cluster client reads it as the count of
    its own send-again loops after a timeout (commands and pipelines) and ignores the
    error list there; its transactions call ``call_with_retry``, which uses the list.
    """

    def __init__(self, retries: int = NOT_RUN_RETRIES) -> None:
        super().__init__(NoBackoff(), retries, NOT_RUN_ERRORS)

    def get_retries(self) -> int:
        return 0

    def update_supported_errors(self, specified_errors: Iterable[type[Exception]]) -> None:
        # redis-py's cluster transaction adds ConnectionError and TimeoutError here.
        self._supported_errors = _only_not_run([*self._supported_errors, *specified_errors])


class AsyncRetryIfNotRun(AsyncRetry):
    """`RetryIfNotRun` for the asyncio clients (redis-py keeps a separate Retry class)."""

    def __init__(self, retries: int = NOT_RUN_RETRIES) -> None:
        super().__init__(NoBackoff(), retries, NOT_RUN_ERRORS)

    def get_retries(self) -> int:
        return 0

    def update_supported_errors(self, specified_errors: Iterable[type[RedisError]]) -> None:
        self._supported_errors = tuple(
            e
            for e in _only_not_run([*self._supported_errors, *specified_errors])
            if issubclass(e, RedisError)
        )


def _options(conf: RedisSettings) -> dict[str, Any]:
    timeout_s = conf.redis_timeout_s
    return {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        **tls_options(conf.redis_url, conf),
    }


#: The asyncio client of the store: one Redis, or a Redis Cluster (``CIOQ_REDIS_CLUSTER``).
AsyncStore = aioredis.Redis | AsyncRedisCluster
SyncStore = redis.Redis | redis.RedisCluster


def packs_with_hiredis(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """`base` packing commands with hiredis's C packer, as redis-py's blocking connections
    do; its asyncio ones pack in Python: 70 µs against 12 µs for a group commit's call of
    ~100 arguments, the largest cost in the api's write path. By hand rather than
    redis-py's `HiredisRespSerializer`, which checks every argument's type in Python
    first (11 `isinstance` per single-op request); hiredis takes bytes, str, int, float
    and memoryviews; anything else goes to redis-py's packer
    (tests/unit/store/test_hiredis_packing.py)."""

    class PacksWithHiredis(base):  # type: ignore[valid-type,misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            first = args[0]
            # A command named in two words ("SCRIPT LOAD") goes as two arguments.
            if (type(first) is str and " " in first) or (type(first) is bytes and b" " in first):
                args = (*first.split(), *args[1:])
            try:
                return [hiredis.pack_command(args)]
            except TypeError:  # a bytearray, or what redis-py refuses (a bool, None)
                return list(super().pack_command(*args))

    PacksWithHiredis.__name__ = f"PacksWithHiredis{base.__name__}"
    return PacksWithHiredis


def connect_async(conf: RedisSettings) -> AsyncStore:
    """The store's asyncio client; in cluster mode `CIOQ_REDIS_URL` names any seed node.
    It never sends a command again after a timeout (`RetryIfNotRun`): the API's enqueue
    is not idempotent for an unkeyed request. On one Redis it waits up to
    ``CIOQ_REDIS_OUTAGE_WAIT_S`` for a connection (`rides_out_outages`); on a cluster,
    for a node restarted or failed over (`RidesOutFailovers`)."""
    if conf.redis_cluster:
        if conf.redis_outage_wait_s <= 0:
            return AsyncRedisCluster.from_url(
                conf.redis_url, retry=AsyncRetryIfNotRun(), **_options(conf)
            )
        cluster = RidesOutFailovers.from_url(
            conf.redis_url, retry=AsyncRetryIfNotRun(), **_options(conf)
        )
        assert isinstance(cluster, RidesOutFailovers)
        cluster.outage_wait_s = conf.redis_outage_wait_s
        return cluster
    client = aioredis.Redis.from_url(
        conf.redis_url,
        health_check_interval=30,
        retry=AsyncRetryIfNotRun(),
        **_options(conf),
    )
    # Set on the pool, after from_url: a rediss:// or unix:// URL picks its own
    # connection class there, which a connection_class argument would not override.
    pool = client.connection_pool
    pool.connection_class = packs_with_hiredis(pool.connection_class)
    if conf.redis_outage_wait_s > 0:
        pool.connection_class = rides_out_outages(pool.connection_class, conf.redis_outage_wait_s)
    return client


def connect_sync(conf: RedisSettings) -> SyncStore:
    """The store's blocking client (workers, sweeper, CLI); a cluster client in cluster mode.
    It never sends a command again after a timeout (`RetryIfNotRun`): a drain's lease,
    dead letters and attempt counts are not idempotent."""
    if conf.redis_cluster:
        return redis.RedisCluster.from_url(conf.redis_url, retry=RetryIfNotRun(), **_options(conf))
    return redis.Redis.from_url(
        conf.redis_url, health_check_interval=30, retry=RetryIfNotRun(), **_options(conf)
    )


def connect_metrics(conf: RedisSettings) -> SyncStore:
    """A blocking client for scrapes and the activity tally: one short timeout, no retries,
    so ``/metrics`` answers quickly; a cluster client in cluster mode (a plain one would get
    MOVED for every key on another primary)."""
    timeout_s = conf.metrics_redis_timeout_s
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
        **tls_options(conf.redis_url, conf),
    }
    if conf.redis_cluster:
        return redis.RedisCluster.from_url(conf.redis_url, **options)
    return redis.Redis.from_url(conf.redis_url, **options)


def queue_by_sha(pipe: Any, script: Script, lua_keys: list[Any], args: list[Any]) -> None:
    """Queue `script` on `pipe` by its sha alone: a pipeline given the script itself asks
    ``SCRIPT EXISTS`` first, one more round trip. The caller handles a ``NOSCRIPT`` reply
    (the command did not run) by calling the script on its own."""
    pipe.evalsha(script.sha, len(lua_keys), *lua_keys, *args)


@functools.cache
def lua_source(name: str) -> str:
    """The text of ``service/store/lua/<name>.lua``."""
    return resources.files("service.store").joinpath("lua", f"{name}.lua").read_text()


def load_script(client: Any, name: str) -> Any:
    """Register a Lua script from ``service/store/lua`` on a sync or asyncio client."""
    return client.register_script(lua_source(name))
