"""The api's pooled connections notice a Redis that closed them (`_closed_by_peer`).

`service.store.outages._closed_by_peer` reads redis-py's private ``_reader`` and
``_writer`` (asyncio's StreamReader and StreamWriter): redis-py 8 offers no public check
that does not read from the socket. If an upgrade renames or retypes them, the check would
quietly always say "open" and a connection Redis closed while idle would get a command
written to it (a 503 instead of a reconnect): these tests fail first.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis

from service.store.outages import _closed_by_peer, rides_out_outages

DEADLINE_S = 5.0


Connection = aioredis.connection.AbstractConnection


def _connection(redis_url: str, base: type[Connection]) -> Connection:
    url = urlsplit(redis_url)
    options: dict[str, Any] = {"host": url.hostname, "port": url.port, "db": int(url.path[1:])}
    return base(**options)


async def _kill(connection: Connection, redis_url: str) -> None:
    """Redis closes `connection` (CLIENT KILL from another client), as a restart would."""
    await connection.send_command("CLIENT", "ID")
    client_id = await connection.read_response()
    with redis.Redis.from_url(redis_url) as other:
        assert other.client_kill_filter(_id=client_id) == 1


async def _until_closed(connection: Connection) -> bool:
    """Whether the close is seen before the deadline (the event loop reads the FIN)."""
    deadline_s = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline_s:
        if _closed_by_peer(connection):
            return True
        await asyncio.sleep(0.02)
    return False


def test_redis_py_keeps_its_streams_where_closed_by_peer_reads_them(redis_url: str) -> None:
    async def run() -> None:
        connection = _connection(redis_url, aioredis.Connection)
        assert connection._reader is None and connection._writer is None
        await connection.connect()
        try:
            assert isinstance(connection._reader, asyncio.StreamReader)
            assert isinstance(connection._writer, asyncio.StreamWriter)
            assert _closed_by_peer(connection) is False
            await _kill(connection, redis_url)
            assert await _until_closed(connection)
        finally:
            await connection.disconnect()

    asyncio.run(run())


def test_a_connection_redis_closed_is_connected_again_before_a_command_is_written(
    redis_url: str,
) -> None:
    async def run() -> None:
        connection = _connection(redis_url, rides_out_outages(aioredis.Connection, 1.0))
        await connection.connect()
        try:
            await _kill(connection, redis_url)
            assert await _until_closed(connection)
            await connection.connect()  # what the pool does before it hands it out
            assert _closed_by_peer(connection) is False
            await connection.send_command("PING")
            assert await connection.read_response() == b"PONG"
        finally:
            await connection.disconnect()

    asyncio.run(run())
