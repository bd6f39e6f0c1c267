"""Every Redis round trip of the App send path, failed in turn: never sent twice.

Twice over: the api sending the job itself (its take, the POST, its record and resolve,
or its hand-over to a worker), and a worker's drain sending it.

The short form (the normal suite) fails each round trip once per mode (`MODES`: a
connection reset before the command, a timeout after it ran, an emptied script cache,
the drain stalled past its lease while a second drain takes over). The full form
(``CIOQ_CRASH_POINTS=full``, `scripts/crash-points`) adds the producer repeating its
request at every point, and every pair of points timing out in one run; each prints
how many round trips and runs it covered.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from service.api.app import create_app
from service.config import Settings
from tests.support.app_send_path import SendPath, baseline, check, sweep, violations
from tests.support.crash_points import MODES, Faults
from tests.support.http_server import serve_in_thread
from tests.support.processes import RedisServer, own_redis_url
from tests.support.triggers import RecordingTriggers

pytestmark = [pytest.mark.chaos]

FULL = os.environ.get("CIOQ_CRASH_POINTS") == "full"


@pytest.fixture
def redis_url(own_redis: RedisServer) -> str:
    """The sweep's own redis-server: its noscript mode empties the script cache."""
    return own_redis_url(own_redis)


@pytest.fixture(params=[False, True], ids=["workers-send", "api-sends"])
def path(
    request: pytest.FixtureRequest,
    make_settings: Callable[..., Settings],
    app_sandbox: httpx.Client,
    app_sandbox_url: str,
    redis_client: redis.Redis,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[SendPath]:
    settings = make_settings(
        app_api_key="dev-app-key",
        app_url=app_sandbox_url,
        upstream_timeout_s=2,
        app_send_wait_ms=20,  # the answer's outcome wait is part of the path
        shards=2,
        # The api's own send (`service.lanes.app.inline`), or a worker's drain.
        app_inline_sends=request.param,
    )
    faults = Faults(redis_url)
    app = create_app(settings, triggers=RecordingTriggers())
    with serve_in_thread(app) as url:
        faults.install(monkeypatch.setattr)
        path = SendPath(settings, url, app_sandbox, redis_client, faults, api=app)
        yield path
        path.close()


def test_every_round_trip_of_a_send_failed_in_every_mode_sends_at_most_once(
    path: SendPath,
) -> None:
    check(*sweep(path, MODES), MODES, "crash points")


@pytest.mark.skipif(not FULL, reason="full form: CIOQ_CRASH_POINTS=full (scripts/crash-points)")
def test_every_round_trip_of_a_repeated_send_sends_at_most_once(path: SendPath) -> None:
    """The producer sends the request twice (its first answer lost): every point again."""
    check(*sweep(path, MODES, repeats=2), MODES, "crash points, repeated")


@pytest.mark.skipif(not FULL, reason="full form: CIOQ_CRASH_POINTS=full (scripts/crash-points)")
def test_every_pair_of_round_trips_timing_out_sends_at_most_once(path: SendPath) -> None:
    """Two faults in one run (a worker dies, and its successor meets a Redis error)."""
    points = baseline(path)
    results = [
        path.run(n, "timeout", also=m)
        for n in range(1, points + 1)
        for m in range(n + 1, points + 3)
    ]
    # Two faults can make the store's reply and the check of its markers both fail: then
    # cioq cannot know the job is stored and answers 503; the keyed retry stores nothing
    # more, which the other properties check.
    broken = [
        (r.point, r.hit, found)
        for r in results
        if (found := [v for v in violations(r) if "5xx" not in v])
    ]
    assert broken == []
    print(f"\ncrash point pairs: {points} round trips, {len(results)} runs")
