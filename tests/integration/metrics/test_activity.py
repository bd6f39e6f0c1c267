"""Per-minute activity counts (service/metrics/activity.py) against a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis

from service import keys
from service.config import Settings
from service.metrics.activity import KEEP_S, Tally, per_minute
from service.store.connections import connect_async

MINUTE_S = 29_000_000 * 60.0  # the start of an epoch minute


def _read(settings: Settings, now_s: float) -> dict[str, float]:
    async def main() -> dict[str, float]:
        client = connect_async(settings.redis)
        try:
            return await per_minute(client, "default", now_s=now_s)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_counts_reach_redis_per_minute_and_expire(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    settings = make_settings()
    tally = Tally(background=False)
    tally.configure(settings.redis)
    tally.add("default", "accepted", 5)
    tally.add("default", "accepted", 2)
    tally.add("default", "status:200")
    tally.add("other", "delivered", 3)
    tally.flush(now_s=MINUTE_S + 10)
    key = keys.activity("default", int(MINUTE_S // 60))
    assert redis_client.hgetall(key) == {b"accepted": b"7", b"status:200": b"1"}
    assert 0 < redis_client.ttl(key) <= KEEP_S
    tally.flush(now_s=MINUTE_S + 11)  # nothing new: nothing written
    assert redis_client.hgetall(key) == {b"accepted": b"7", b"status:200": b"1"}
    assert _read(settings, MINUTE_S + 30) == {"accepted": 7.0, "status:200": 1.0}


@pytest.mark.parametrize(
    ("seconds_into_next_minute", "expected"),
    [(0, 60.0 + 4), (15, 45.0 + 4), (45, 15.0 + 4), (59.999, 4.0)],
)
def test_the_last_minute_counts_for_the_part_still_in_the_window(
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    seconds_into_next_minute: float,
    expected: float,
) -> None:
    settings = make_settings()
    tally = Tally(background=False)
    tally.configure(settings.redis)
    tally.add("default", "delivered", 60)
    tally.flush(now_s=MINUTE_S + 30)
    tally.add("default", "delivered", 4)
    tally.flush(now_s=MINUTE_S + 65)
    got = _read(settings, MINUTE_S + 60 + seconds_into_next_minute)
    assert got["delivered"] == pytest.approx(expected, abs=0.01)
    assert _read(settings, MINUTE_S + 180) == {}


def test_an_unconfigured_tally_records_nothing(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    tally = Tally(background=False)
    tally.add("default", "accepted", 5)
    tally.configure(make_settings().redis)
    tally.flush(now_s=MINUTE_S)
    assert redis_client.keys("cioq:act:*") == []


def test_a_redis_error_drops_the_counts_without_raising(
    make_settings: Callable[..., Settings],
) -> None:
    tally = Tally(background=False)
    tally.configure(make_settings(redis_url="redis://127.0.0.1:1/0").redis)
    tally.add("default", "accepted", 5)
    tally.flush(now_s=MINUTE_S)  # logged, not raised: counting must never stop delivery
    tally.flush(now_s=MINUTE_S)


def test_a_pair_counts_both_names(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    tally = Tally(background=False)
    tally.configure(make_settings().redis)
    tally.add_pair("default", "track:accepted", "@billing:accepted")
    tally.add_pair("default", "track:accepted", "@billing:accepted", 3)
    tally.flush(now_s=MINUTE_S)
    key = keys.activity("default", int(MINUTE_S // 60))
    assert redis_client.hgetall(key) == {b"track:accepted": b"4", b"@billing:accepted": b"4"}
