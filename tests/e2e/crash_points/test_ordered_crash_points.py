"""Every Redis round trip of the Track and Pipelines paths, failed in turn: nothing
acknowledged is lost and each person's operations end in the order they were sent
(these lanes deliver at least once, so a repeat is allowed and only counted).

Same modes as the App sweep (`MODES`); the producer sends four operations for two
people, one request each. Short and full form alike: each round trip once per mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from service.api.app import create_app
from service.config import Settings
from service.jobs import Lane
from tests.support.crash_points import MODES, Faults
from tests.support.http_server import serve_in_thread
from tests.support.ordered_paths import OrderedPath, OrderedResult, violations
from tests.support.processes import RedisServer, own_redis_url
from tests.support.triggers import RecordingTriggers

pytestmark = [pytest.mark.chaos]


@pytest.fixture
def redis_url(own_redis: RedisServer) -> str:
    """The sweep's own redis-server: its noscript mode empties the script cache."""
    return own_redis_url(own_redis)


@pytest.fixture(params=[Lane.TRACK, Lane.PIPELINES], ids=["track", "pipelines"])
def path(
    request: pytest.FixtureRequest,
    make_settings: Callable[..., Settings],
    sandbox_url: str,
    sandbox: httpx.Client,
    redis_client: redis.Redis,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[OrderedPath]:
    settings = make_settings(
        track_url=sandbox_url,
        cdp_url=sandbox_url,
        cdp_api_key="dev-cdp-key",
        upstream_timeout_s=2,
        shards=2,
    )
    faults = Faults(redis_url)
    with serve_in_thread(create_app(settings, triggers=RecordingTriggers())) as url:
        faults.install(monkeypatch.setattr)
        path = OrderedPath(request.param, settings, url, sandbox, redis_client, faults)
        yield path
        path.close()


def test_every_round_trip_failed_in_every_mode_loses_nothing_and_keeps_each_persons_order(
    path: OrderedPath,
) -> None:
    clean = path.run(0, "none")
    assert violations(clean) == [] and clean.repeats == 0 and len(clean.arrivals) == 4
    path.run(10**9, "none")  # a point never reached: counts only
    points = path.faults.count
    results: list[OrderedResult] = [
        path.run(n, mode) for mode in MODES for n in range(1, points + 6)
    ]
    broken = [(r.point, r.mode, r.hit, violations(r)) for r in results if violations(r)]
    assert broken == []
    for mode in MODES:
        fired = sum(1 for r in results if r.mode == mode and r.hit)
        assert fired >= (3 if mode == "stall" else points * 4 // 5), mode
    repeats = sum(r.repeats for r in results)
    print(
        f"\n{path.lane} crash points: {points} round trips x {len(MODES)} modes = "
        f"{len(results)} runs, {repeats} repeated deliveries (allowed)"
    )
    print("round trips failed:", sorted({r.hit for r in results if r.hit}))
