"""Bulk marking at ingest: X-Cioq-Traffic and bulk ingest keys put jobs in bulk streams,
whose triggers go to the bulk queue."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from service import keys
from service.api.app import create_app
from service.config import Settings
from service.jobs import Lane, Traffic
from tests.support.http_server import serve_in_thread
from tests.support.triggers import RecordingTriggers

AUTH = ("any-site", "dev-ingest-key")
BULK_AUTH = ("any-site", "backfill-key")


@pytest.fixture
def url(make_settings: Callable[..., Settings], triggers: RecordingTriggers) -> Iterator[str]:
    settings = make_settings(linger_ms=250, bulk_ingest_keys="backfill-key")
    with serve_in_thread(create_app(settings, triggers=triggers)) as found:
        yield found


def counts(client: redis.Redis) -> dict[Traffic, int]:
    return {
        traffic: sum(
            int(client.xlen(keys.shard_keys("default", s, Lane.TRACK, traffic=traffic).stream))
            for s in range(4)
        )
        for traffic in Traffic
    }


def event(person: int) -> dict[str, object]:
    return {"type": "person", "action": "event", "identifiers": {"id": str(person)}, "name": "e"}


@pytest.mark.parametrize(
    ("auth", "headers", "expected"),
    [
        (AUTH, {}, Traffic.LIVE),
        (AUTH, {"X-Cioq-Traffic": "live"}, Traffic.LIVE),
        (AUTH, {"X-Cioq-Traffic": "bulk"}, Traffic.BULK),
        (AUTH, {"X-Cioq-Traffic": "BULK"}, Traffic.BULK),
        (BULK_AUTH, {}, Traffic.BULK),
        (BULK_AUTH, {"X-Cioq-Traffic": "live"}, Traffic.BULK),  # a bulk key stays bulk
    ],
)
def test_traffic_class_comes_from_the_header_or_the_key(
    url: str,
    redis_client: redis.Redis,
    triggers: RecordingTriggers,
    auth: tuple[str, str],
    headers: dict[str, str],
    expected: Traffic,
) -> None:
    batch = {"batch": [event(n) for n in range(10)]}
    r = httpx.post(f"{url}/api/v2/batch", json=batch, auth=auth, headers=headers, timeout=10)
    assert (r.status_code, r.json()) == (200, {})
    assert counts(redis_client) == {expected: 10, **{t: 0 for t in Traffic if t != expected}}
    assert triggers.queues and all(
        q == (expected, expected is Traffic.BULK) for q in triggers.queues
    )


def test_a_v1_call_can_be_bulk_too(url: str, redis_client: redis.Redis) -> None:
    r = httpx.put(
        f"{url}/api/v1/customers/7",
        json={"plan": "gold"},
        auth=AUTH,
        headers={"X-Cioq-Traffic": "bulk"},
        timeout=10,
    )
    assert r.status_code == 200
    assert counts(redis_client) == {Traffic.LIVE: 0, Traffic.BULK: 1}


def test_an_unknown_traffic_class_is_refused_naming_the_header(
    url: str, redis_client: redis.Redis
) -> None:
    r = httpx.post(
        f"{url}/api/v2/batch",
        json={"batch": [event(1)]},
        auth=AUTH,
        headers={"X-Cioq-Traffic": "urgent"},
        timeout=10,
    )
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"] == "X-Cioq-Traffic"
    assert counts(redis_client) == {Traffic.LIVE: 0, Traffic.BULK: 0}


def test_idempotent_bulk_requests_are_stored_as_bulk(url: str, redis_client: redis.Redis) -> None:
    headers = {"X-Cioq-Traffic": "bulk", "Idempotency-Key": "k1"}
    for _ in range(2):
        r = httpx.post(
            f"{url}/api/v2/batch", json={"batch": [event(1)]}, auth=AUTH, headers=headers
        )
        assert r.status_code == 200
    assert counts(redis_client) == {Traffic.LIVE: 0, Traffic.BULK: 1}


@pytest.mark.parametrize(
    ("head_age_ms", "bulk_queue"),
    [
        (0, False),  # nothing waits: an ordinary live trigger, after the linger
        (300, False),  # the head waits, but within the marker's life (1,000 ms)
        (5_000, True),  # an earlier trigger is unserved: workers down or behind
    ],
)
def test_a_shard_whose_head_outwaited_the_trigger_marker_is_triggered_on_the_bulk_queue(
    url: str,
    redis_client: redis.Redis,
    triggers: RecordingTriggers,
    head_age_ms: int,
    bulk_queue: bool,
) -> None:
    """While no worker drains, a write to a shard sent a live trigger every marker life;
    after the outage the live events waited in the live queue behind all of them."""
    if head_age_ms:
        old_ms = int(time.time() * 1000) - head_age_ms
        for s in range(4):  # whichever shard the event lands on
            stream = keys.shard_keys("default", s, Lane.TRACK).stream
            redis_client.xadd(stream, {"v2": b"{}"}, id=f"{old_ms}-0")
    r = httpx.post(f"{url}/api/v2/batch", json={"batch": [event(1)]}, auth=AUTH, timeout=10)
    assert r.status_code == 200
    [(_, _, countdown_s)] = triggers.sent
    assert triggers.queues == [(Traffic.LIVE, bulk_queue)]
    assert countdown_s == (0.0 if bulk_queue else 0.25)
