"""Durability levels: start-up checks of Redis, and no acknowledged job lost to a Redis crash."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.api.app import create_app
from service.config import Settings
from service.errors import ConfigError
from service.store.connections import connect_sync
from service.store.startup_checks import RedisFacts, Verdict, check_sync, evaluate
from tests.support.http_server import serve_in_thread
from tests.support.load import produce, seq_of
from tests.support.processes import RedisServer, wait_until
from tests.support.scale import sized
from tests.support.stack import INGEST_KEY, SITE_ID, Stack
from tests.support.triggers import RecordingTriggers
from tests.support.valkey import valkey_server

OLD = (7, 0, 15)
NEW = (7, 2, 4)


def facts(
    version: tuple[int, ...] = OLD,
    appendonly: bool = True,
    appendfsync: str | None = "always",
    policy: str = "noeviction",
    replicas: int = 0,
) -> RedisFacts:
    return RedisFacts(version, appendonly, appendfsync, policy, replicas)


#: A managed service without AOF (ElastiCache, Memorystore): CONFIG GET refused, one replica.
NO_AOF = facts(appendonly=False, appendfsync=None, replicas=1)


@pytest.mark.parametrize(
    ("env", "durability", "found", "waitaof", "refusal", "warned"),
    [
        ("development", "write", facts(appendonly=False, appendfsync="no"), False, None, False),
        ("development", "fsync", facts(), False, None, False),
        ("development", "fsync", facts(NEW, appendfsync="everysec"), True, None, False),
        ("development", "fsync", facts(appendfsync="everysec"), None, "appendfsync always", False),
        ("development", "fsync", facts(appendfsync=None), None, "CONFIG GET refused", False),
        ("development", "fsync", facts(NEW, appendonly=False), None, "appendonly yes", False),
        ("development", "fsync", facts(appendonly=False), None, "appendonly yes", False),
        ("development", "write", facts(policy="allkeys-lru"), False, None, True),
        ("production", "write", facts(policy="allkeys-lru"), None, "noeviction", False),
        ("production", "fsync", facts(NEW), True, None, False),
        ("production", "replica", NO_AOF, False, None, False),
        ("production", "replica", facts(NEW, replicas=1), False, None, False),
        ("production", "replica", facts(appendonly=False), None, "at least one replica", False),
        ("production", "replicated", NO_AOF, None, "appendonly yes", False),
    ],
)
def test_start_up_verdicts(
    env: str,
    durability: str,
    found: RedisFacts,
    waitaof: bool | None,
    refusal: str | None,
    warned: bool,
) -> None:
    """Each Redis configuration is accepted (with or without WAITAOF), warned about, or refused."""
    settings = Settings(env=env, durability=durability)
    if refusal is not None:
        with pytest.raises(ConfigError, match=refusal):
            evaluate(found, settings.redis)
        return
    verdict = evaluate(found, settings.redis)
    assert _waitaof(verdict) is waitaof
    assert bool(verdict.warnings) is warned


def _waitaof(verdict: Verdict) -> bool:
    return verdict.confirmation is not None and verdict.confirmation.waitaof


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", appendonly=True, fsync="everysec")
    yield server
    server.stop()


def test_check_reads_a_real_redis(own_redis: RedisServer) -> None:
    """Against a live Redis 7.0: everysec is refused for fsync, always is accepted."""
    settings = Settings(redis_url=own_redis.url, durability="fsync")
    client = connect_sync(settings.redis)
    with pytest.raises(ConfigError, match="appendfsync everysec"):
        check_sync(client, settings.redis)
    client.config_set("appendfsync", "always")
    assert _waitaof(check_sync(client, settings.redis)) is False
    client.config_set("maxmemory-policy", "allkeys-lru")
    with pytest.raises(ConfigError, match="noeviction"):
        check_sync(client, settings.redis.model_copy(update={"env": "production"}))
    client.close()


def test_check_asks_a_real_valkey_9_for_waitaof(tmp_path: Path) -> None:
    """Valkey 9 (tests/locks/valkey.lock) says ``redis_version:7.2.4``: fsync at
    ``appendfsync everysec`` is accepted, confirmed per write by WAITAOF."""
    server = RedisServer(tmp_path / "valkey", appendonly=True, exe=valkey_server())
    try:
        settings = Settings(redis_url=server.url, durability="fsync")
        client = connect_sync(settings.redis)
        assert client.info("server")["server_name"] == "valkey"
        assert _waitaof(check_sync(client, settings.redis)) is True
        client.close()
    finally:
        server.stop()


def test_api_started_without_redis_checks_it_before_the_first_write(tmp_path: Path) -> None:
    """Redis down at start-up: the api starts, refuses writes until Redis is up *and* fit."""
    server = RedisServer(tmp_path / "redis", appendonly=True, fsync="everysec")
    server.stop()
    settings = Settings(
        redis_url=server.url, durability="fsync", redis_timeout_s=0.5, backlog_refresh_ms=0
    )
    app = create_app(settings, triggers=RecordingTriggers())
    auth = ("site", "dev-ingest-key")
    try:
        with serve_in_thread(app) as url, httpx.Client(base_url=url, auth=auth) as api:

            def post() -> httpx.Response:
                return api.post("/api/v1/customers/1/events", json={"name": "x"})

            assert post().status_code == 503
            server.start()
            refused = post()
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert refused.json()["errors"][0]["field"] == "store"
            client = server.client()
            client.config_set("appendfsync", "always")
            client.close()
            assert post().status_code == 200
            assert app.gate.verdict is not None and not _waitaof(app.gate.verdict)
    finally:
        server.stop()


def test_api_and_worker_refuse_a_redis_without_fsync(tmp_path: Path) -> None:
    """`cioq api` and `cioq worker` exit with the reason when fsync cannot be kept."""
    stack = Stack(tmp_path, durability="fsync")  # its Redis fsyncs every second only
    try:
        api = stack.start("api", ["api"])
        worker = stack.start("worker", ["worker", "--concurrency=1"])
        for proc in (api, worker):
            wait_until(proc.exited, timeout_s=60, what=f"{proc.name} to exit")
            assert proc.popen.returncode != 0
            assert "appendfsync always" in proc.log()
    finally:
        stack.close()


@pytest.mark.load
def test_fsync_level_loses_nothing_acknowledged_when_redis_is_sigkilled(tmp_path: Path) -> None:
    """3,000 acknowledged ops (10,000 in the soak), Redis SIGKILLed and restarted from its AOF:
    every one arrives."""
    stack = Stack(tmp_path, redis_fsync="always", durability="fsync")
    try:
        # Given ops acknowledged by the api while no worker drains
        stack.start_api()
        people = [f"d-{i}" for i in range(sized(150, 500))]
        produced = asyncio.run(produce(stack.api_url, (SITE_ID, INGEST_KEY), people, per_person=20))
        assert produced.total == len(people) * 20
        # When Redis dies without warning and comes back from its AOF
        assert stack.redis.proc is not None
        stack.redis.proc.kill()
        stack.redis.start()
        # Then workers deliver every acknowledged op
        stack.start_sweeper()
        stack.start_worker(concurrency=2)
        expected = {(p, s) for p, seqs in produced.accepted.items() for s in seqs}

        def delivered() -> set[tuple[str, int]]:
            return {seq_of(record["op"]) for record in stack.received()}

        wait_until(
            lambda: delivered() >= expected,
            timeout_s=240,
            interval_s=1,
            what="every acknowledged op at the sandbox",
        )
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.close()
