"""One pipelined Redis connection for the ingest write path (`service.store.slots`).

By hand on purpose: a group commit's call through redis-py's asyncio client costs ~40 µs
more CPU than the same bytes through an asyncio ``Protocol`` with hiredis's reader
(its pool, retry wrapper, timeout context and ``StreamReader`` per call), and at ~7
requests per call over HTTP that was ~15% of single-op ingest: 0.86x → 1.01x the bare
app's req/s (`bench/ingest_floor.py`, docs/benchmarks.md). The rest of cioq keeps
redis-py. The connection is made from a redis-py connection's own settings (host or
socket, database, credentials, TLS context, timeouts), and its errors are redis-py's
exceptions, mapped by redis-py's own parser, so `store_errors` and the slot writer read
them as before.

What it promises, as redis-py's client with `AsyncRetryIfNotRun` does:

- nothing is written unless the connection is up (and answered a ``PING``: a Redis still
  loading its AOF is not up). A connection that cannot come up raises `NotConnected`
  (nothing sent) at once, or after riding out the outage for ``outage_wait_s``; a Redis
  that closed an idle connection is reconnected before anything is written;
- once written, a command is never sent again here: a reset or a timeout fails every
  call waiting on the connection with ConnectionError or TimeoutError (it may have run),
  and the connection is dropped, so no later reply is read as another call's;
- replies come back in order, one per command, an error reply as its exception.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import hiredis
import redis
import redis.asyncio as aioredis
from redis._parsers.base import BaseParser  # redis-py's map of error replies to exceptions
from redis.exceptions import InvalidResponse

from service.store.outages import NotConnected, Outage

#: An idle connection is checked with a ``PING`` before a write, as redis-py's client
#: does with ``health_check_interval=30``: a link a firewall dropped silently fails the
#: PING (nothing of the write sent) rather than the write (which may have run).
HEALTH_CHECK_IDLE_S = 30.0
#: The first and the longest pause between two tries to connect during an outage.
RECONNECT_FIRST_S = 0.05
RECONNECT_MAX_S = 0.5


@dataclass(frozen=True, slots=True)
class Address:
    """Where and how to connect: what a redis-py connection of the same client would use."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket instead of host and port
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    timeout_s: float | None = None
    connect_timeout_s: float | None = None

    @classmethod
    def of(cls, client: aioredis.Redis) -> Address:
        """The address of `client`'s connections, read from one its pool would make."""
        conn: Any = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        tls = conn.ssl_context.get() if isinstance(conn, aioredis.SSLConnection) else None
        common: dict[str, Any] = {
            "db": int(conn.db),
            "username": conn.username,
            "password": conn.password,
            "timeout_s": conn.socket_timeout,
            "connect_timeout_s": conn.socket_connect_timeout,
        }
        if isinstance(conn, aioredis.UnixDomainSocketConnection):
            return cls(path=conn.path, **common)
        return cls(host=conn.host, port=int(conn.port), tls=tls, **common)


class _Link(asyncio.Protocol):
    """The socket: hands each reply to the oldest waiting command."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=_error)
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiting = self.waiting
        try:
            while True:
                reply = reader.gets()
                if reply is False:
                    return
                if not waiting:  # a reply nobody asked for: the stream is out of step
                    raise InvalidResponse("a reply arrived with no command waiting for it")
                future = waiting.popleft()
                if not future.done():
                    future.set_result(reply)
        except InvalidResponse as exc:
            self.fail(redis.ConnectionError(f"unreadable reply from Redis: {exc}"))

    def send(self, packed: bytes, count: int) -> list[asyncio.Future[Any]]:
        """Write `count` packed commands; a future per reply, in order."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(count)]
        self.waiting.extend(futures)
        self.transport.write(packed)
        return futures

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.fail(redis.ConnectionError(f"connection to Redis lost: {exc or 'closed by peer'}"))

    def fail(self, exc: Exception) -> None:
        """Every waiting command meets `exc`; the link is closed (its replies are lost)."""
        if self.lost is None:
            self.lost = exc
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    @property
    def up(self) -> bool:
        return self.lost is None and self.transport is not None


def _error(message: str) -> Exception:
    return BaseParser.parse_error(message)  # type: ignore[no-untyped-call,no-any-return]


class Wire:
    """Commands to one Redis over one connection, pipelined; see the module's promises."""

    def __init__(
        self, address: Address, *, outage_wait_s: float = 0.0, fail_fast: bool = False
    ) -> None:
        """A connection that cannot come up is tried again for `outage_wait_s` (one
        outage's wait, not one per call, as `rides_out_outages`), then ConnectionError; with
        `fail_fast` (a cluster node's, `fails_fast_when_down`) NotConnected at once: the
        slot writer re-reads the topology and rides the outage out itself."""
        self.address = address
        self.outage_wait_s = outage_wait_s
        self.fail_fast = fail_fast
        self.outage = Outage()
        self._link: _Link | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Lock | None = None
        self._last_used_s = 0.0

    async def call(self, commands: Sequence[Sequence[Any]], *, blocking_ms: int = 0) -> list[Any]:
        """Each command's reply, an error reply as its exception (not raised).

        The replies may take the read timeout plus `blocking_ms`: how long the commands
        may block in Redis on purpose (a ``WAIT``'s or ``WAITAOF``'s own timeout), which the
        read timeout must not cut short.

        Raises ConnectionError when no connection came up (NotConnected with
        `fail_fast`: nothing was written); ConnectionError or TimeoutError when the link
        broke after the commands were written (they may have run).
        """
        # Packed first: an argument hiredis cannot pack raises here, before any reply is
        # expected, so the replies of later calls stay in step.
        packed = b"".join([hiredis.pack_command(tuple(c)) for c in commands])
        link = await self._ready()
        futures = link.send(packed, len(commands))
        self._last_used_s = time.monotonic()
        timeout_s = self.address.timeout_s
        if timeout_s is not None:
            timeout_s += blocking_ms / 1000
        try:
            if len(futures) == 1:
                async with asyncio.timeout(timeout_s):
                    return [await futures[0]]
            async with asyncio.timeout(timeout_s):
                return list(await asyncio.gather(*futures))
        except TimeoutError:
            link.fail(redis.TimeoutError("timeout reading from Redis"))
            raise redis.TimeoutError("timeout reading from Redis") from None

    async def _ready(self) -> _Link:
        loop = asyncio.get_running_loop()
        link = self._link
        if link is not None and link.up and self._loop is loop:
            if time.monotonic() - self._last_used_s < HEALTH_CHECK_IDLE_S:
                return link
            if await self._answers_ping(link):
                return link
        if self._loop is not loop:  # a new event loop (tests run several): start afresh
            self._loop, self._connecting, self._link = loop, asyncio.Lock(), None
        assert self._connecting is not None
        async with self._connecting:  # one connect at a time; the others use its link
            link = self._link
            if link is not None and link.up:
                return link
            self._link = link = await self._connect_riding_out()
            self._last_used_s = time.monotonic()
            return link

    async def _answers_ping(self, link: _Link) -> bool:
        (future,) = link.send(hiredis.pack_command(("PING",)), 1)
        try:
            async with asyncio.timeout(self.address.timeout_s):
                await future
        except (redis.RedisError, TimeoutError):
            link.fail(redis.ConnectionError("an idle connection did not answer PING"))
            return False
        self._last_used_s = time.monotonic()
        return True

    async def _connect_riding_out(self) -> _Link:
        pause_s = RECONNECT_FIRST_S
        while True:
            try:
                link = await self._connect()
            except (redis.ConnectionError, redis.TimeoutError, OSError, TimeoutError) as exc:
                if self.fail_fast:
                    raise NotConnected(f"Redis at {self._where()}: {exc}") from exc
                if self.outage_wait_s <= 0 or not self.outage.may_wait(pause_s, self.outage_wait_s):
                    raise redis.ConnectionError(f"Redis at {self._where()}: {exc}") from exc
                await asyncio.sleep(pause_s)
                pause_s = min(pause_s * 2, RECONNECT_MAX_S)
                continue
            self.outage.began_s = None
            return link

    async def _connect(self) -> _Link:
        a = self.address
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(a.connect_timeout_s):
            if a.path is not None:
                _, link = await loop.create_unix_connection(_Link, a.path)
            else:
                _, link = await loop.create_connection(
                    _Link, a.host, a.port, ssl=a.tls, server_hostname=a.host if a.tls else None
                )
            handshake: list[tuple[Any, ...]] = []
            if a.password is not None:
                auth = (a.username, a.password) if a.username else (a.password,)
                handshake.append(("AUTH", *auth))
            if a.db:
                handshake.append(("SELECT", a.db))
            handshake.append(("PING",))  # a Redis loading its data answers LOADING: not up
            futures = link.send(
                b"".join(hiredis.pack_command(c) for c in handshake), len(handshake)
            )
            try:
                replies = await asyncio.gather(*futures)
            except BaseException:
                link.fail(redis.ConnectionError("connection handshake failed"))
                raise
        for reply in replies:
            if isinstance(reply, Exception):
                link.fail(redis.ConnectionError(f"connection handshake refused: {reply}"))
                if isinstance(reply, redis.ConnectionError):  # LOADING, max clients
                    raise reply
                raise redis.ConnectionError(f"Redis refused the connection: {reply}")
        return link

    def _where(self) -> str:
        a = self.address
        return a.path or f"{a.host}:{a.port}"

    async def aclose(self) -> None:
        if self._link is not None:
            self._link.fail(redis.ConnectionError("connection closed"))
            self._link = None
