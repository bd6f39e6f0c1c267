"""F10, standalone Redis: a command whose reply was lost is never sent again.

The reply of a script that counts its runs is lost on the way back (a proxy drops it):
the client times out, and the script must have run exactly once. redis-py 8.1's
standalone clients built by ``from_url`` happen not to retry; these tests pin that, so
a library default that changes cannot run ``acquire.lua`` or a dead letter twice. The
cluster clients did retry (10 times): tests/e2e/store/test_cluster_no_resend.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
import redis

from service.config import Settings
from service.errors import StoreUnavailable
from service.store.connections import connect_async, connect_sync, store_errors
from tests.support.lossy_proxy import LossyProxy

COUNT_RUNS = "return redis.call('INCR', KEYS[1])"


@pytest.fixture
def proxy(redis_url: str) -> Iterator[LossyProxy]:
    lossy = LossyProxy(redis_url)
    yield lossy
    lossy.close()


def test_the_blocking_client_does_not_resend_a_script_whose_reply_was_lost(
    proxy: LossyProxy, make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    client = connect_sync(make_settings(redis_url=proxy.url, redis_timeout_s=0.3).redis)
    script = client.register_script(COUNT_RUNS)
    assert script(keys=["runs"]) == 1  # loads the script; the connection is open

    proxy.lose_next_reply()
    with pytest.raises(StoreUnavailable), store_errors("count"):
        script(keys=["runs"])

    assert redis_client.get("runs") == b"2"
    assert script(keys=["runs"]) == 3  # a new connection works: only the lost one is dead
    client.close()


def test_the_asyncio_client_does_not_resend_a_script_whose_reply_was_lost(
    proxy: LossyProxy, make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    async def run() -> int:
        client = connect_async(make_settings(redis_url=proxy.url, redis_timeout_s=0.3).redis)
        script = client.register_script(COUNT_RUNS)
        try:
            assert await script(keys=["runs"]) == 1
            proxy.lose_next_reply()
            with pytest.raises(StoreUnavailable), store_errors("count"):
                await script(keys=["runs"])
            return int(await script(keys=["runs"]))
        finally:
            await client.aclose()

    assert asyncio.run(run()) == 3
    assert redis_client.get("runs") == b"3"
