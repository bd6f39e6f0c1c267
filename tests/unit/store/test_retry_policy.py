"""F10: the store clients' retry policy sends again only what provably did not run."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError

from service.config import Settings
from service.store.connections import (
    NOT_RUN_RETRIES,
    AsyncRetryIfNotRun,
    RetryIfNotRun,
    connect_async,
    connect_sync,
)

#: (error, whether the policy sends the command again)
CASES = [
    (MovedError("3999 127.0.0.1:7001"), True),
    (AskError("3999 127.0.0.1:7001"), True),
    (TryAgainError("slot migrating"), True),
    (ClusterDownError("CLUSTERDOWN"), True),
    (redis.TimeoutError("late reply"), False),
    (redis.ConnectionError("reset"), False),
    (TimeoutError("socket"), False),
]


def _attempts(policy: RetryIfNotRun, error: Exception) -> int:
    calls = 0

    def fail() -> None:
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(type(error)):
        policy.call_with_retry(fail, lambda _e: None)
    return calls


async def _attempts_async(policy: AsyncRetryIfNotRun, error: Exception) -> int:
    calls = 0

    async def fail() -> None:
        nonlocal calls
        calls += 1
        raise error

    async def ignore(_e: Exception) -> None:
        return None

    with pytest.raises(type(error)):
        await policy.call_with_retry(fail, ignore)
    return calls


@pytest.mark.parametrize(("error", "resent"), CASES)
def test_only_replies_that_prove_nothing_ran_are_sent_again(error: Exception, resent: bool) -> None:
    expected = 1 + NOT_RUN_RETRIES if resent else 1
    assert _attempts(RetryIfNotRun(), error) == expected
    assert asyncio.run(_attempts_async(AsyncRetryIfNotRun(), error)) == expected


@pytest.mark.parametrize("policy", [RetryIfNotRun(), AsyncRetryIfNotRun()])
def test_the_cluster_transactions_additions_cannot_bring_back_timeouts(
    policy: RetryIfNotRun | AsyncRetryIfNotRun,
) -> None:
    """redis-py's cluster transaction adds ConnectionError and TimeoutError to the list."""
    policy.update_supported_errors(
        [redis.ConnectionError, redis.TimeoutError, MovedError, AskError]
    )
    assert not any(issubclass(e, redis.ConnectionError) for e in policy._supported_errors)
    assert not any(issubclass(e, redis.TimeoutError) for e in policy._supported_errors)
    assert MovedError in policy._supported_errors


@pytest.mark.parametrize("policy", [RetryIfNotRun(), AsyncRetryIfNotRun()])
def test_the_cluster_clients_own_send_again_loops_get_zero_tries(
    policy: RetryIfNotRun | AsyncRetryIfNotRun,
) -> None:
    """redis-py's cluster client re-sends after a timeout as many times as this says."""
    assert policy.get_retries() == 0


def test_the_store_clients_use_the_policy() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", broker_url="redis://x:1/0")
    sync_client = connect_sync(settings.redis)
    assert isinstance(sync_client, redis.Redis)
    assert isinstance(sync_client.connection_pool.connection_kwargs["retry"], RetryIfNotRun)
    async_client = connect_async(settings.redis)
    assert isinstance(async_client, aioredis.Redis)
    assert isinstance(async_client.connection_pool.connection_kwargs["retry"], AsyncRetryIfNotRun)
    # The blocking cluster client reads the topology when built: tested on a real cluster
    # in tests/e2e/store/test_cluster_no_resend.py.
    cluster_client = connect_async(settings.redis.model_copy(update={"redis_cluster": True}))
    assert isinstance(cluster_client, AsyncRedisCluster)
    assert isinstance(cluster_client.retry, AsyncRetryIfNotRun)
