"""Every Redis round trip of the App send path at durability ``fsync`` on Valkey 9.

Debian's redis-server 7.0 has no ``WAITAOF``, so there ``fsync`` is kept by ``appendfsync
always`` and the sweep of test_app_send_crash_points.py never meets the command. Here the
server is Valkey 9 (`tests.support.valkey`, pinned by tests/locks/valkey.lock): the api
finds WAITAOF at start-up, and every ingest write, in-flight note and dead letter is
confirmed by a ``WAITAOF 1 0`` pipelined behind it (`service.store.durability`), so those
round trips are crash points too. One mode more than standalone (`FSYNC_MODES`): a
WAITAOF that times out before an fsync (the write applied, unconfirmed). Short form: each
round trip once per mode; the full form (``CIOQ_CRASH_POINTS=full``,
`scripts/crash-points`) adds a repeated send.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from service.api.app import create_app
from service.config import Settings
from service.store.durability import Confirmation
from tests.support.app_send_path import SendPath, check, sweep
from tests.support.crash_points import FSYNC_MODES, Faults
from tests.support.http_server import serve_in_thread
from tests.support.processes import RedisServer, own_redis_url
from tests.support.triggers import RecordingTriggers
from tests.support.valkey import valkey_server

pytestmark = [pytest.mark.chaos]

FULL = os.environ.get("CIOQ_CRASH_POINTS") == "full"
DURABILITY_TIMEOUT_MS = 2000


@pytest.fixture(scope="module")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Valkey 9 with AOF, fsyncing every write: WAITAOF answers as soon as it is asked."""
    data_dir: Path = tmp_path_factory.mktemp("valkey")
    server = RedisServer(data_dir, appendonly=True, fsync="always", exe=valkey_server())
    yield server
    server.stop()


@pytest.fixture
def redis_url(valkey: RedisServer) -> str:
    """The sweep's own server: its noscript mode empties the script cache."""
    return own_redis_url(valkey)


@pytest.fixture
def path(
    make_settings: Callable[..., Settings],
    app_sandbox: httpx.Client,
    app_sandbox_url: str,
    redis_client: redis.Redis,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[SendPath]:
    settings = make_settings(
        durability="fsync",
        durability_timeout_ms=DURABILITY_TIMEOUT_MS,
        app_api_key="dev-app-key",
        app_url=app_sandbox_url,
        upstream_timeout_s=2,
        app_send_wait_ms=20,
        shards=2,
    )
    faults = Faults(redis_url)
    app = create_app(settings, triggers=RecordingTriggers())
    with serve_in_thread(app) as url:
        faults.install(monkeypatch.setattr)
        path = SendPath(
            settings,
            url,
            app_sandbox,
            redis_client,
            faults,
            confirmation=Confirmation(True, 0, DURABILITY_TIMEOUT_MS),
            api=app,
        )
        yield path
        # The api chose WAITAOF by itself, from what Valkey 9 reports of its version.
        assert app.gate.verdict is not None
        assert app.gate.verdict.confirmation == Confirmation(True, 0, DURABILITY_TIMEOUT_MS)
        path.close()


def _waitaof_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_waitaof", {}).get("calls", 0))


def test_every_round_trip_of_a_send_at_fsync_on_valkey_failed_in_every_mode_sends_at_most_once(
    path: SendPath, redis_client: redis.Redis
) -> None:
    before = _waitaof_calls(redis_client)
    check(*sweep(path, FSYNC_MODES), FSYNC_MODES, "fsync (WAITAOF) crash points")
    confirmed = _waitaof_calls(redis_client) - before
    print(f"WAITAOF round trips answered: {confirmed}")
    assert confirmed > 0


@pytest.mark.skipif(not FULL, reason="full form: CIOQ_CRASH_POINTS=full (scripts/crash-points)")
def test_every_round_trip_of_a_repeated_send_at_fsync_on_valkey_sends_at_most_once(
    path: SendPath,
) -> None:
    check(*sweep(path, FSYNC_MODES, repeats=2), FSYNC_MODES, "fsync crash points, repeated")
