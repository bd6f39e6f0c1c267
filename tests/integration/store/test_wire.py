"""The ingest write path's own connection (`service.store.wire`) against a real Redis.

Each test hunts one of the module's promises where it would break: replies out of step
after a timeout or a reset, a command written to a connection Redis closed, an outage
that ends within the wait, error replies not the exceptions redis-py would raise.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from service.store.outages import NotConnected
from service.store.wire import Address
from tests.support.processes import free_port
from tests.support.wire import wire_for

DEADLINE_S = 10.0


def test_replies_come_back_in_order_with_error_replies_as_redis_py_raises_them(
    redis_url: str,
) -> None:
    async def run() -> None:
        wire = wire_for(redis_url)
        try:
            replies = await wire.call(
                [
                    ("SET", "k", "v"),
                    ("EVALSHA", "0" * 40, 0),
                    ("INCR", "k"),
                    ("GET", "k"),
                ]
            )
        finally:
            await wire.aclose()
        assert replies[0] == b"OK"
        assert replies[3] == b"v"
        # The classes redis-py's own client raises for the same replies.
        client = aioredis.Redis.from_url(redis_url)
        for reply, command in ((replies[1], ("EVALSHA", "0" * 40, 0)), (replies[2], ("INCR", "k"))):
            with pytest.raises(ResponseError) as raised:
                await client.execute_command(*command)
            assert type(reply) is type(raised.value)
        await client.aclose()
        assert isinstance(replies[1], NoScriptError)

    asyncio.run(run())


def test_concurrent_callers_each_get_their_own_replies(redis_url: str) -> None:
    async def run() -> None:
        wire = wire_for(redis_url)

        async def caller(n: int) -> None:
            for i in range(20):
                value = f"{n}-{i}"
                replies = await wire.call([("ECHO", value), ("ECHO", value + "!")])
                assert replies == [value.encode(), (value + "!").encode()]

        try:
            await asyncio.gather(*(caller(n) for n in range(50)))
        finally:
            await wire.aclose()

    asyncio.run(run())


def test_a_connection_redis_closed_while_idle_is_replaced_before_a_write(redis_url: str) -> None:
    async def run() -> None:
        wire = wire_for(redis_url)
        try:
            (client_id,) = await wire.call([("CLIENT", "ID")])
            with redis.Redis.from_url(redis_url) as other:
                assert other.client_kill_filter(_id=client_id) == 1
            deadline_s = time.monotonic() + DEADLINE_S
            link = wire._link
            while link is not None and link.up and time.monotonic() < deadline_s:  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # until the loop reads the FIN
            assert await wire.call([("INCR", "n")]) == [1]
            (new_id,) = await wire.call([("CLIENT", "ID")])
            assert new_id != client_id
        finally:
            await wire.aclose()

    asyncio.run(run())


def test_no_redis_fails_at_once_or_with_not_connected_when_failing_fast() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"

    async def run() -> None:
        with pytest.raises(redis.ConnectionError) as plain:
            await wire_for(url).call([("PING",)])
        assert not isinstance(plain.value, NotConnected)
        with pytest.raises(NotConnected):
            await wire_for(url, fail_fast=True).call([("PING",)])

    asyncio.run(run())


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6390/3", Address(host="127.0.0.1", port=6390, db=3)),
        (
            "redis://user:pw@redis.internal:6379/0",
            Address(host="redis.internal", username="user", password="pw"),
        ),
        ("unix:///run/redis.sock?db=2", Address(path="/run/redis.sock", db=2)),
    ],
)
def test_the_address_is_what_redis_py_reads_from_the_url(url: str, expected: Address) -> None:
    found = Address.of(aioredis.Redis.from_url(url))
    assert (found.host, found.port, found.path, found.db) == (
        expected.host if expected.path is None else found.host,
        expected.port if expected.path is None else found.port,
        expected.path,
        expected.db,
    )
    assert (found.username, found.password, found.tls) == (
        expected.username,
        expected.password,
        None,
    )


def test_a_tls_url_gets_a_verifying_context() -> None:
    found = Address.of(aioredis.Redis.from_url("rediss://redis.internal:6380/0"))
    assert found.tls is not None
    assert found.tls.check_hostname is True


def test_an_argument_it_cannot_send_is_refused_and_later_replies_stay_in_step(
    redis_url: str,
) -> None:
    async def run() -> None:
        wire = wire_for(redis_url)
        try:
            assert await wire.call([("ECHO", "first")]) == [b"first"]
            with pytest.raises(TypeError):
                await wire.call([("ECHO", None)])
            assert await wire.call([("ECHO", "after")]) == [b"after"]
        finally:
            await wire.aclose()

    asyncio.run(run())


def test_a_wait_may_outlast_the_read_timeout_by_its_own_timeout(redis_url: str) -> None:
    """A WAIT for a replica that is not there blocks for its timeout, longer than the read
    timeout: with that time granted the call gets WAIT's answer (0 replicas), not a
    timeout that would make a stored write look lost."""

    async def run() -> None:
        wire = wire_for(redis_url, timeout_s=0.3)
        try:
            commands = [("SET", "k", "v"), ("WAIT", 1, 800)]
            assert await wire.call(commands, blocking_ms=800) == [b"OK", 0]
            with pytest.raises(redis.TimeoutError):
                await wire.call(commands)
        finally:
            await wire.aclose()

    asyncio.run(run())
