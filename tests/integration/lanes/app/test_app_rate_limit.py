"""The cluster-wide token buckets (``lua/token_bucket.lua``) against a real Redis: spacing,
refusals that reserve nothing, 429 holds, and one budget shared by several processes."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import keys
from service.config import Settings
from service.lanes.app.rate_limit import LimitClass, RateLimiter, limit_for


@pytest.mark.parametrize(
    ("limit_class", "overrides", "interval_us"),
    [
        (LimitClass.SEND, {}, round(1e6 / 97)),
        (LimitClass.APP, {}, round(1e6 / 9.7)),
        (LimitClass.BROADCAST, {}, round(10e6 / 0.97)),
        (LimitClass.SEND, {"app_send_rps": 50, "app_rate_headroom": 1.0}, 20_000),
        (
            LimitClass.BROADCAST,
            {"app_broadcast_interval_s": 2, "app_rate_headroom": 1.0},
            2_000_000,
        ),
    ],
)
def test_limits_follow_settings(
    limit_class: LimitClass, overrides: dict[str, Any], interval_us: int
) -> None:
    assert limit_for(limit_class, Settings(**overrides).app).interval_us == interval_us


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rps=st.floats(min_value=5, max_value=2000), count=st.integers(min_value=2, max_value=40))
def test_reserved_slots_are_at_least_one_interval_apart(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, rps: float, count: int
) -> None:
    redis_client.flushdb()
    limiter = RateLimiter(redis_client, make_settings(app_send_rps=rps, app_rate_headroom=1.0).app)
    key = keys.rate_bucket("ws", LimitClass.SEND)
    slots = []
    for _ in range(count):
        reservation = limiter.reserve("ws", LimitClass.SEND, max_wait_ms=60_000)
        assert reservation.granted
        # The bucket holds the next free slot (Redis's clock, µs); this one is a step before.
        slots.append(int(redis_client.get(key) or 0))
    interval_us = limit_for(LimitClass.SEND, limiter.app).interval_us
    assert all(b - a >= interval_us for a, b in itertools.pairwise(slots))


def test_refusal_reserves_nothing_and_says_how_long(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    limiter = RateLimiter(redis_client, make_settings(app_rps=1, app_rate_headroom=1.0).app)
    assert limiter.reserve("ws", LimitClass.APP, max_wait_ms=0).wait_s == 0
    refused = limiter.reserve("ws", LimitClass.APP, max_wait_ms=100)
    assert not refused.granted and 0.8 < refused.wait_s <= 0.9
    later = limiter.reserve("ws", LimitClass.APP, max_wait_ms=5000)
    assert later.granted and 0.9 < later.wait_s <= 1.0  # the refusal took no slot


def test_buckets_are_per_workspace_class_and_broadcast(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    limiter = RateLimiter(redis_client, make_settings().app)
    for workspace, limit_class, name in [
        ("a", LimitClass.BROADCAST, "1"),
        ("a", LimitClass.BROADCAST, "2"),
        ("b", LimitClass.BROADCAST, "1"),
        ("a", LimitClass.SEND, ""),
    ]:
        assert limiter.reserve(workspace, limit_class, name=name, max_wait_ms=0).granted
    assert not limiter.reserve("a", LimitClass.BROADCAST, name="1", max_wait_ms=0).granted


def test_hold_delays_every_caller(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    limiter = RateLimiter(redis_client, make_settings().app)
    limiter.hold("ws", LimitClass.SEND, hold_ms=700)
    reservation = limiter.reserve("ws", LimitClass.SEND, max_wait_ms=5000)
    assert reservation.granted and 0.6 < reservation.wait_s <= 0.7
    limiter.hold("ws", LimitClass.SEND, hold_ms=10)  # a shorter hold never shortens a wait
    assert limiter.reserve("ws", LimitClass.SEND, max_wait_ms=5000).wait_s > 0.6
