"""The ingest write path's own connection (`service.store.wire`) against a Redis of the
test's own: credentials and database, a timeout and a reset mid-call, an outage that ends
within the wait, the health check of an idle connection."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis

from service.store import wire as wire_module
from tests.support.processes import RedisServer, free_port
from tests.support.wire import wire_for


def _with_user(server: RedisServer) -> None:
    """An ACL user ``cioq`` (password ``s3cret``) beside the open default user."""
    with redis.Redis(port=server.port) as admin:
        admin.acl_setuser(
            "cioq", enabled=True, passwords=["+s3cret"], keys=["*"], commands=["+@all"]
        )


def test_it_writes_to_the_database_and_with_the_credentials_of_its_url(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    try:
        _with_user(server)
        url = f"redis://cioq:s3cret@127.0.0.1:{server.port}/5"

        async def run() -> None:
            wire = wire_for(url)
            try:
                assert await wire.call([("SET", "where", "five")]) == [b"OK"]
                (info,) = await wire.call([("CLIENT", "INFO")])
                assert b" user=cioq " in info  # as the user the URL names
            finally:
                await wire.aclose()

        asyncio.run(run())
        with redis.Redis(port=server.port, db=5) as check:
            assert check.get("where") == b"five"
        with redis.Redis(port=server.port, db=0) as check:
            assert check.get("where") is None
    finally:
        server.stop()


def test_a_wrong_password_is_a_connection_error_before_anything_is_written(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis")
    try:
        _with_user(server)
        url = f"redis://cioq:wrong@127.0.0.1:{server.port}/0"

        async def run() -> None:
            wire = wire_for(url)
            with pytest.raises(redis.ConnectionError):
                await wire.call([("SET", "k", "v")])
            await wire.aclose()

        asyncio.run(run())
        with redis.Redis(port=server.port) as check:
            assert check.dbsize() == 0
            assert any(e["username"] == "cioq" for e in check.acl_log())  # it was refused
    finally:
        server.stop()


def test_a_timeout_fails_the_call_and_no_late_reply_is_read_as_the_next_calls(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis", extra=["--enable-debug-command", "yes"])
    try:

        async def run() -> None:
            wire = wire_for(server.url, timeout_s=0.3)
            try:
                with pytest.raises(redis.TimeoutError):
                    # Runs after the call gave up: its reply must not reach the next call.
                    await wire.call([("DEBUG", "SLEEP", "0.8"), ("ECHO", "late")])
                assert await wire.call([("ECHO", "mine")]) == [b"mine"]
            finally:
                await wire.aclose()

        asyncio.run(run())
    finally:
        server.stop()


def test_a_reset_mid_call_fails_every_waiting_call_and_the_next_one_reconnects(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis", extra=["--enable-debug-command", "yes"])
    try:

        async def run() -> None:
            wire = wire_for(server.url)
            try:
                await wire.call([("PING",)])
                first = asyncio.ensure_future(wire.call([("DEBUG", "SLEEP", "2")]))
                second = asyncio.ensure_future(wire.call([("ECHO", "b")]))
                await asyncio.sleep(0.2)
                assert server.proc is not None
                server.proc.kill()  # Redis dies with both calls on the wire
                outcomes = await asyncio.gather(first, second, return_exceptions=True)
                assert all(isinstance(o, redis.ConnectionError) for o in outcomes), outcomes
                server.start()
                assert await wire.call([("ECHO", "after")]) == [b"after"]
            finally:
                await wire.aclose()

        asyncio.run(run())
    finally:
        server.stop()


def test_an_outage_that_ends_within_the_wait_costs_a_slower_answer(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    started: list[RedisServer] = []

    async def run() -> float:
        wire = wire_for(url, outage_wait_s=20.0)
        loop = asyncio.get_running_loop()
        # Redis comes up a moment after the first try, from another thread.
        loop.call_later(
            0.3,
            lambda: loop.run_in_executor(
                None, lambda: started.append(RedisServer(tmp_path / "r", port=port))
            ),
        )
        began_s = time.monotonic()
        try:
            assert await wire.call([("SET", "k", "v")]) == [b"OK"]
        finally:
            await wire.aclose()
        return time.monotonic() - began_s

    try:
        waited_s = asyncio.run(run())
        assert 0.3 <= waited_s < 20.0
        assert started[0].client().get("k") == b"v"
    finally:
        for server in started:
            server.stop()


def test_an_idle_connection_answers_a_ping_before_a_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire_module, "HEALTH_CHECK_IDLE_S", 0.0)  # every call finds it idle
    server = RedisServer(tmp_path / "redis")
    try:
        with redis.Redis(port=server.port) as check:
            check.config_resetstat()

        async def run() -> None:
            wire = wire_for(server.url)
            try:
                for _ in range(3):
                    assert await wire.call([("ECHO", "x")]) == [b"x"]
            finally:
                await wire.aclose()

        asyncio.run(run())
        with redis.Redis(port=server.port) as check:
            stats = check.info("commandstats")
        # One PING ends the connect; each later call found the link idle and pinged first.
        assert stats["cmdstat_ping"]["calls"] == 3
        assert stats["cmdstat_echo"]["calls"] == 3
    finally:
        server.stop()
