"""Redis unreachable (a redis-server of the test's own, stopped): ingest waits for it up to
``CIOQ_REDIS_OUTAGE_WAIT_S``, then answers 503 with Retry-After; back up → 200."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from service.api.app import create_app
from service.config import Settings
from tests.support.http_server import serve_in_thread
from tests.support.processes import RedisServer, wait_until
from tests.support.triggers import RecordingTriggers

AUTH = ("any-site", "dev-ingest-key")
SHARDS = 2
EVENT = "/api/v1/customers/1/events"


def _settings(server: RedisServer, outage_wait_s: float) -> Settings:
    return Settings(
        redis_url=server.url,
        shards=SHARDS,
        backlog_refresh_ms=200,
        redis_timeout_s=1,
        redis_outage_wait_s=outage_wait_s,
    )


def test_an_outage_longer_than_the_wait_answers_503_and_recovers(tmp_path: Path) -> None:
    """Redis down past the wait → 503 + Retry-After once the wait is over (not a hang);
    the wait is one per outage, so a later request is answered 503 at once."""
    server = RedisServer(tmp_path / "redis")
    wait_s = 2.0
    app = create_app(_settings(server, wait_s), triggers=RecordingTriggers())
    try:
        with serve_in_thread(app) as url, httpx.Client(base_url=url, auth=AUTH) as api:

            def post() -> int:
                return api.post(EVENT, json={"name": "x"}).status_code

            def timed_post() -> tuple[httpx.Response, float]:
                started_s = time.monotonic()
                answer = api.post(EVENT, json={"name": "x"})
                return answer, time.monotonic() - started_s

            assert post() == 200
            server.stop()
            first, first_s = timed_post()
            assert first.status_code == 503 and first.headers["retry-after"] == "1"
            assert first.json()["errors"][0]["field"] == "store"
            assert first_s < wait_s + 5  # bounded: the wait, not one per store call
            later, later_s = timed_post()
            assert later.status_code == 503 and later_s < wait_s
            server.start()
            wait_until(lambda: post() == 200, timeout_s=30, what="ingest to recover")
    finally:
        server.stop()


def test_a_restart_within_the_wait_is_ridden_out_without_a_503(tmp_path: Path) -> None:
    """A request that arrives while Redis restarts is held, then stored: 200, not 503."""
    server = RedisServer(tmp_path / "redis", appendonly=True)
    app = create_app(_settings(server, 30.0), triggers=RecordingTriggers())
    try:
        with serve_in_thread(app) as url, httpx.Client(base_url=url, auth=AUTH, timeout=60) as api:
            assert api.post(EVENT, json={"name": "x"}).status_code == 200
            assert server.proc is not None
            server.proc.kill()
            # The outage lasts a second (as a restart does), while the request waits.
            restart = threading.Timer(1.0, server.start)
            restart.start()
            try:
                r = api.post(EVENT, json={"name": "y"})
            finally:
                restart.join()
            assert r.status_code == 200, r.text
            assert server.client().dbsize() > 0
    finally:
        server.stop()
