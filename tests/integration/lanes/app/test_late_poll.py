"""The poller of late failures against real Redis and the sandbox's activity log: one holder,
a cursor that resumes with no gap and no repeat, its share of the read budget, and the
daily quota's 429 without Retry-After."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis

from sandbox import SandboxConfig, create_sandbox_app
from service import keys
from service.config import Settings
from service.lanes.app.client import AppClient
from service.lanes.app.late_poll import ActivityPoller, PollOutcome
from tests.support.http_server import serve_in_thread
from tests.support.processes import wait_until
from tests.support.streams import stream_fields
from workers.late_polls import LatePolls

APP_KEY = "dev-app-key"


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with serve_in_thread(create_sandbox_app(SandboxConfig(app_rps=10))) as url:
        yield url


@pytest.fixture
def sandbox(sandbox_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox_url, timeout=10) as client:
        client.post("/_sandbox/reset").raise_for_status()
        late = {"rate": 1.0, "min_delay_s": 0.0, "max_delay_s": 0.0}
        client.post("/_sandbox/late_failures", json=late).raise_for_status()
        yield client


@pytest.fixture
def settings(make_settings: Callable[..., Settings], sandbox_url: str) -> Settings:
    # The sandbox's calls here come from no drain: no index to tie them to (and so no wait
    # for one; tests/integration/lanes/app/test_late_links.py covers the links).
    return make_settings(
        app_api_key=APP_KEY,
        app_url=sandbox_url,
        late_poll_interval_s=1,
        late_poll_read_share=0.5,
        late_link_window_s=0,
    )


@pytest.fixture
def make_poller(
    settings: Settings, redis_client: redis.Redis
) -> Iterator[Callable[..., ActivityPoller]]:
    clients: list[AppClient] = []

    def build(**kwargs: Any) -> ActivityPoller:
        ws = settings.workspace("default")
        clients.append(AppClient(ws, timeout_s=5))
        return ActivityPoller(redis_client, settings.app, ws, clients[-1], **kwargs)

    yield build
    for client in clients:
        client.close()


def _identifies(sandbox: httpx.Client, people: range) -> None:
    ops = [
        {
            "type": "person",
            "action": "identify",
            "identifiers": {"id": f"p{n}"},
            "attributes": {"email": f"p{n}@example.com"},
        }
        for n in people
    ]
    r = sandbox.post("/api/v2/batch", json={"batch": ops}, auth=("dev-site", "dev-api-key"))
    assert r.status_code == 200, r.text


def _recorded(redis_client: redis.Redis) -> list[str]:
    rows = stream_fields(redis_client, keys.late_failures("default"))
    return [orjson.loads(fields[b"r"])["activity"]["customer_id"] for fields in rows]


def _activity_reads(sandbox: httpx.Client) -> list[dict[str, Any]]:
    log = sandbox.get("/_sandbox/requests").json()["records"]
    return [r for r in log if r["path"] == "/v1/activities"]


def test_a_poll_records_each_failure_once_across_walks_and_restarts(
    sandbox: httpx.Client, make_poller: Callable[..., ActivityPoller], redis_client: redis.Redis
) -> None:
    _identifies(sandbox, range(0, 3))
    first = make_poller()
    assert first.poll().recorded == 3
    assert first.poll().recorded == 0  # nothing new: nothing repeated
    _identifies(sandbox, range(3, 253))  # more than two pages of 100
    redis_client.delete(keys.late_lease("default"))  # the first one died; its lease ran out
    restarted = make_poller()
    report = restarted.poll()
    assert report.outcome is PollOutcome.OK and report.recorded == 250
    recorded = _recorded(redis_client)
    assert recorded == [f"p{n}" for n in range(253)]  # oldest first, no gap, no repeat


def test_a_walk_cut_short_records_nothing_and_the_next_one_records_it_all(
    sandbox: httpx.Client, make_poller: Callable[..., ActivityPoller], redis_client: redis.Redis
) -> None:
    poller = make_poller()
    _identifies(sandbox, range(1))
    assert poller.poll().recorded == 1  # the cursor is set
    _identifies(sandbox, range(1, 251))
    reads = len(_activity_reads(sandbox))
    cut = {"rate": 1.0, "min_delay_s": 0.0, "max_delay_s": 0.0, "daily_read_quota": 1}
    sandbox.post("/_sandbox/late_failures", json=cut).raise_for_status()
    report = poller.poll()  # page 1 answered, page 2 refused: a walk cut short
    assert report.outcome is PollOutcome.QUOTA and report.recorded == 0
    assert len(_activity_reads(sandbox)) == reads + 2
    assert _recorded(redis_client) == ["p0"]
    sandbox.post("/_sandbox/late_failures", json={**cut, "daily_read_quota": None})
    redis_client.delete(keys.late_backoff("default"))
    assert poller.poll().recorded == 250
    assert _recorded(redis_client) == [f"p{n}" for n in range(251)]


def test_a_poller_that_lost_its_lease_mid_walk_records_nothing(
    sandbox: httpx.Client,
    make_poller: Callable[..., ActivityPoller],
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stale = make_poller()
    _identifies(sandbox, range(3))
    redis_client.set(keys.late_lease("default"), "another-holder", px=60_000)
    monkeypatch.setattr(stale, "hold_lease", lambda: True)  # it has not noticed yet
    assert stale.poll().outcome is PollOutcome.NOT_HOLDER
    assert _recorded(redis_client) == []  # the commit is fenced by the lease


def test_a_type_first_seen_empty_is_walked_back_to_then_whatever_appears(
    sandbox: httpx.Client, make_poller: Callable[..., ActivityPoller], redis_client: redis.Redis
) -> None:
    poller = make_poller()
    assert poller.poll().recorded == 0  # no failures yet: every cursor is set to now
    _identifies(sandbox, range(150))  # more than the first page
    assert poller.poll().recorded == 150


def test_only_the_lease_holder_polls_and_records(
    sandbox: httpx.Client, make_poller: Callable[..., ActivityPoller], redis_client: redis.Redis
) -> None:
    holder, other = make_poller(), make_poller()
    assert holder.hold_lease() and not other.hold_lease()
    _identifies(sandbox, range(2))
    assert other.poll().outcome is PollOutcome.NOT_HOLDER
    assert _activity_reads(sandbox) == []  # the other one made no request
    redis_client.delete(keys.late_lease("default"))  # the holder's lease ran out
    assert other.poll().recorded == 2
    # The old holder's walk commits nothing once it lost the lease: no record twice.
    assert holder.poll().outcome is PollOutcome.NOT_HOLDER
    assert len(_recorded(redis_client)) == 2


def test_a_released_lease_is_taken_over_at_once_and_a_release_by_another_is_refused(
    sandbox: httpx.Client, make_poller: Callable[..., ActivityPoller], redis_client: redis.Redis
) -> None:
    holder, other = make_poller(), make_poller()
    assert holder.hold_lease()
    assert not other.release_lease()  # only the holder can give it up
    assert other.poll().outcome is PollOutcome.NOT_HOLDER
    assert holder.release_lease()  # a graceful stop: no waiting for the lease to run out
    _identifies(sandbox, range(2))
    assert other.poll().recorded == 2
    assert holder.poll().outcome is PollOutcome.NOT_HOLDER


def test_reads_are_spaced_to_the_pollers_share_of_the_read_budget(
    sandbox: httpx.Client,
    make_poller: Callable[..., ActivityPoller],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """App reads 10/s x 0.97 headroom x 0.5 share: one read every 0.21 s at most."""
    poller = make_poller()
    sent_at: list[float] = []
    send = poller.http.send

    def timed(method: str, path: str, body: bytes) -> Any:
        sent_at.append(time.monotonic())
        return send(method, path, body)

    monkeypatch.setattr(poller.http, "send", timed)
    poller.poll()
    poller.poll()  # 2 walks x 3 failure types: 6 reads
    assert len(sent_at) == len(_activity_reads(sandbox)) == 6
    spacing_s = 1 / (settings.app.app_rps * settings.app.app_rate_headroom * 0.5)
    assert min(b - a for a, b in itertools.pairwise(sent_at)) >= spacing_s


def test_a_daily_quota_429_backs_off_visibly_and_makes_no_requests_meanwhile(
    sandbox: httpx.Client, make_poller: Callable[..., ActivityPoller], redis_client: redis.Redis
) -> None:
    quota = {"rate": 1.0, "min_delay_s": 0.0, "max_delay_s": 0.0, "daily_read_quota": 0}
    sandbox.post("/_sandbox/late_failures", json=quota).raise_for_status()
    poller = make_poller()
    assert poller.poll().outcome is PollOutcome.QUOTA
    until = int(redis_client.get(keys.late_backoff("default")) or 0)
    assert until > poller.wall_ms()
    reads = len(_activity_reads(sandbox))
    assert poller.poll().outcome is PollOutcome.BACKING_OFF
    assert len(_activity_reads(sandbox)) == reads
    sandbox.post("/_sandbox/late_failures", json={**quota, "daily_read_quota": None})
    redis_client.delete(keys.late_backoff("default"))  # the back-off ran out
    _identifies(sandbox, range(1))
    wait_until(lambda: poller.poll().recorded == 1, timeout_s=30, what="the failure recorded")


def test_two_sweepers_poll_with_one_holder(
    sandbox: httpx.Client, settings: Settings, redis_client: redis.Redis
) -> None:
    sweepers = [LatePolls(settings, redis_client), LatePolls(settings, redis_client)]
    try:
        _identifies(sandbox, range(4))
        assert [s.poll_once() for s in sweepers] == [4, 0]
        stop = threading.Event()
        thread = sweepers[1].start(stop)
        assert thread is not None
        _identifies(sandbox, range(4, 6))
        redis_client.delete(keys.late_lease("default"))  # the first sweeper died
        wait_until(lambda: len(_recorded(redis_client)) == 6, timeout_s=30, what="taken over")
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive()
    finally:
        for s in sweepers:
            s.close()
    assert _recorded(redis_client) == [f"p{n}" for n in range(6)]
