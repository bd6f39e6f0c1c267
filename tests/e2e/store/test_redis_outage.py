"""Redis unreachable (a redis-server of the test's own, stopped): 503, then recovery."""

from __future__ import annotations

from pathlib import Path

import httpx

from service.api.app import create_app
from service.config import Settings
from tests.support.http_server import serve_in_thread
from tests.support.processes import RedisServer, wait_until

AUTH = ("any-site", "dev-ingest-key")
SHARDS = 2


class NoTriggers:
    """The test drains by hand, so triggers go nowhere."""

    def send(self, workspace: str, shard: int, *, countdown_s: float = 0.0) -> None:
        pass

    def close(self) -> None:
        pass


def test_redis_unreachable_answers_503_and_recovers(tmp_path: Path) -> None:
    """Redis down → 503 + Retry-After at once (no socket wait per request); back up → 200."""
    server = RedisServer(tmp_path / "redis")
    settings = Settings(
        redis_url=server.url, shards=SHARDS, backlog_refresh_ms=200, redis_timeout_s=1
    )
    app = create_app(settings, triggers=NoTriggers())
    try:
        with serve_in_thread(app) as url, httpx.Client(base_url=url, auth=AUTH) as api:

            def post() -> int:
                return api.post("/api/v1/customers/1/events", json={"name": "x"}).status_code

            assert post() == 200
            server.stop()
            r = api.post("/api/v1/customers/1/events", json={"name": "x"})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["errors"][0]["field"] == "store"
            server.start()
            wait_until(lambda: post() == 200, timeout_s=30, what="ingest to recover")
    finally:
        server.stop()
