"""Backpressure: 503 with Retry-After over a high-water mark or without Redis; recovery."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from service import keys
from service.api.app import create_app
from service.config import Settings
from service.errors import Overloaded
from service.jobs import Lane, Traffic
from service.lanes.registry import clients as lane_clients
from service.store.backpressure import Backpressure, Reading
from service.store.dead_letters import DeadLetterStore
from service.store.shards import ShardStore
from tests.support.http_server import serve_in_thread
from tests.support.sandbox import KEY, SITE
from tests.support.triggers import RecordingTriggers
from workers.drain import Drainer, DrainerSettings

AUTH = ("any-site", "dev-ingest-key")
SHARDS = 2


def event(person: str, seq: int) -> dict[str, Any]:
    return {
        "type": "person",
        "action": "event",
        "identifiers": {"id": person},
        "name": "bp",
        "attributes": {"seq": seq},
    }


@pytest.mark.parametrize(
    ("entries", "age_s", "fields"),
    [
        (0, 0.0, []),
        (100, 60.0, []),
        (101, 60.0, ["backlog.entries"]),
        (100, 60.5, ["backlog.oldest_age_s"]),
        (101, 61.0, ["backlog.entries", "backlog.oldest_age_s"]),
    ],
)
def test_marks_crossed(entries: int, age_s: float, fields: list[str]) -> None:
    """A mark is crossed only when the reading is strictly above it; each names its field."""
    settings = Settings(backlog_max_entries=100, backlog_max_age_s=60)
    bp = Backpressure(aioredis.Redis(), settings.backlog, settings.queue, settings.workspaces)
    crossed = bp.marks_crossed(Reading(entries, age_s, 0.0))
    assert [m.field for m in crossed] == fields
    assert all(m.limit is not None and m.actual is not None for m in crossed)


def test_reading_is_cached_for_the_refresh_period(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """Ingest reads the backlog at most once per refresh period; then sees the change."""
    now = [100.0]
    settings = make_settings(shards=SHARDS, backlog_max_entries=3, backlog_refresh_ms=1000)
    stream = keys.shard_keys("default", 0, Lane.TRACK).stream

    async def run() -> list[str]:
        client = aioredis.Redis.from_url(settings.redis.redis_url)
        bp = Backpressure(
            client, settings.backlog, settings.queue, settings.workspaces, clock=lambda: now[0]
        )
        outcomes: list[str] = []
        for advance_s in (0.0, 0.5, 1.0):
            now[0] += advance_s
            try:
                await bp.check("default")
                outcomes.append("ok")
            except Overloaded as exc:
                outcomes.append(exc.mark.field)
            redis_client.xadd(stream, {"o": b"{}"})
            redis_client.xadd(stream, {"o": b"{}"})
        await client.aclose()
        return outcomes

    assert asyncio.run(run()) == ["ok", "ok", "backlog.entries"]


def test_reading_counts_every_lane_and_traffic_class(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """The one-call reading sums every lane's live and bulk streams and finds the oldest
    entry among them (ids carry their time)."""
    settings = make_settings(
        shards=SHARDS, backlog_refresh_ms=0, cdp_api_key="cdp", app_api_key="app"
    )
    placed = [
        (keys.shard_keys("default", 0, Lane.TRACK, Traffic.LIVE).stream, 3),
        (keys.shard_keys("default", 1, Lane.PIPELINES, Traffic.BULK).stream, 2),
        (keys.shard_keys("default", 1, Lane.APP, Traffic.LIVE).stream, 1),
    ]
    old_ms = int(redis_client.time()[0]) * 1000 - 120_000
    redis_client.xadd(placed[1][0], {"o": b"{}"}, id=f"{old_ms}-0")
    for stream, count in placed:
        for _ in range(count):
            redis_client.xadd(stream, {"o": b"{}"})

    async def read() -> Reading:
        client = aioredis.Redis.from_url(settings.redis.redis_url)
        try:
            return await Backpressure(
                client, settings.backlog, settings.queue, settings.workspaces
            ).reading("default")
        finally:
            await client.aclose()

    reading = asyncio.run(read())
    assert reading.entries == 7
    assert 119 <= reading.oldest_age_s <= 180


def test_oldest_entry_age_over_the_mark_is_refused(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """An entry older than the age mark (its id's time is long past) turns ingest away."""
    settings = make_settings(shards=SHARDS, backlog_max_age_s=600, backlog_refresh_ms=0)
    redis_client.xadd(keys.shard_keys("default", 1, Lane.TRACK).stream, {"o": b"{}"}, id="1-1")
    app = create_app(settings, triggers=RecordingTriggers())
    with serve_in_thread(app) as url, httpx.Client(base_url=url, auth=AUTH) as api:
        r = api.post("/api/v1/customers/1/events", json={"name": "x"})
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    [error] = r.json()["errors"]
    assert (error["field"], error["rule"], error["limit"]) == (
        "backlog.oldest_age_s",
        "max_age_s",
        600,
    )
    assert error["actual"] > 1_000_000


@pytest.fixture
def api_and_drain(
    make_settings: Callable[..., Settings], sandbox_url: str, redis_client: redis.Redis
) -> Iterator[tuple[httpx.Client, Callable[[], None]]]:
    settings = make_settings(
        shards=SHARDS,
        site_id=SITE,
        api_key=KEY,
        track_url=sandbox_url,
        backlog_max_entries=30,
        backlog_refresh_ms=0,
    )
    clients = lane_clients(settings)
    drainer = Drainer(
        DrainerSettings.of(settings),
        ShardStore(redis_client),
        DeadLetterStore(redis_client),
        clients,
        None,
    )

    def drain_all() -> None:
        for shard in range(SHARDS):
            drainer.drain("default", shard, Lane.TRACK)

    app = create_app(settings, triggers=RecordingTriggers())
    with serve_in_thread(app) as url, httpx.Client(base_url=url, auth=AUTH, timeout=10) as api:
        yield api, drain_all


def test_backlog_over_the_mark_is_refused_until_drained(
    api_and_drain: tuple[httpx.Client, Callable[[], None]], client: httpx.Client
) -> None:
    """Over 30 entries → 503 + Retry-After naming the mark; drained → 200; nothing lost."""
    api, drain_all = api_and_drain
    accepted: set[tuple[str, int]] = set()
    # Given a backlog of 35 accepted ops, over the mark of 30
    batch = [event(f"p{i % 7}", i) for i in range(35)]
    assert api.post("/api/v2/batch", json={"batch": batch}).status_code == 200
    accepted |= {(op["identifiers"]["id"], op["attributes"]["seq"]) for op in batch}
    # Then ingest refuses more, saying which mark and how long to wait
    r = api.post("/api/v2/batch", json={"batch": [event("late", 100)]})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    [error] = r.json()["errors"]
    assert error == {
        "field": "backlog.entries",
        "rule": "max_entries",
        "message": error["message"],
        "limit": 30,
        "actual": 35,
    }
    assert "high-water mark of 30" in error["message"]
    # When the workers drain below the mark, ingest accepts again by itself
    drain_all()
    r = api.post("/api/v2/batch", json={"batch": [event("late", 100)]})
    assert r.status_code == 200
    accepted.add(("late", 100))
    drain_all()
    # And every op accepted before or after the refusal was delivered
    records = client.get("/_sandbox/received").json()["records"]
    got = {(rec["op"]["identifiers"]["id"], rec["op"]["attributes"]["seq"]) for rec in records}
    assert got == accepted
