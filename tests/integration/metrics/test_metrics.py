"""Metrics: queue-state gauges from real Redis, the api's /metrics, bounded labels."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import httpx
import pytest
import redis
from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service import keys
from service.api.app import create_app
from service.config import Settings
from service.jobs import Lane
from service.metrics import definitions as metrics
from service.metrics.export import process_registry
from service.metrics.queue_state import (
    LaneState,
    QueueStateCollector,
    WorkspaceState,
    drain_rate_per_s,
    record_drained,
)
from service.store.connections import connect_metrics
from tests.support.http_server import serve_in_thread
from tests.support.triggers import RecordingTriggers

AUTH = ("any-site", "dev-ingest-key")
#: A bare key is named by its fingerprint, never by itself.
DEV_INGEST_KEY_NAME = "key-" + hashlib.sha256(b"dev-ingest-key").hexdigest()[:8]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_queue_state_is_read_from_redis_at_scrape_time(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    settings = make_settings(drain_rate_window_s=10)
    now_s = time.time()
    first = keys.shard_keys("default", 1, Lane.TRACK).stream
    redis_client.xadd(first, {"o": b"{}"}, id=f"{int((now_s - 40) * 1000)}-0")
    redis_client.xadd(first, {"o": b"{}"}, id="*")
    redis_client.xadd(keys.shard_keys("default", 3, Lane.TRACK).stream, {"o": b"{}"})
    redis_client.xadd(keys.dead_letters("default"), {"reason": "invalid"})
    redis_client.set(keys.pause("default", Lane.TRACK), "setup:401", px=60_000)
    client = connect_metrics(settings.redis)
    collector = QueueStateCollector(
        settings.queue, settings.metrics, settings.workspaces, client, clock=lambda: now_s
    )

    got = samples(generate_latest(process_registry(collector)).decode())
    ws = (("workspace", "default"),)
    assert got[("cioq_queue_state_up", ())] == 1
    assert got[("cioq_backlog_entries", ws)] == 3
    track = (("lane", "track"),)
    shard_1 = (*track, ("shard", "1"), *ws)
    assert got[("cioq_shard_backlog_entries", shard_1)] == 2
    assert got[("cioq_shard_backlog_entries", (*track, ("shard", "0"), *ws))] == 0
    assert got[("cioq_lane_backlog_entries", (*track, *ws))] == 3
    assert 39 <= got[("cioq_backlog_oldest_age_seconds", ws)] <= 41
    # Nothing drained yet: backlog_seconds falls back to the oldest entry's age.
    assert got[("cioq_backlog_seconds", ws)] == got[("cioq_backlog_oldest_age_seconds", ws)]
    assert got[("cioq_dead_letter_entries", ws)] == 1
    assert got[("cioq_workspace_paused", (("cause", "setup"), *track, *ws))] == 1
    assert got[("cioq_workspace_paused", (("cause", "throttle"), *track, *ws))] == 0
    assert got[("cioq_workspace_paused", (("cause", "other"), *track, *ws))] == 0
    assert 59 <= got[("cioq_workspace_pause_remaining_seconds", (*track, *ws))] <= 60

    record_drained(redis_client, "default", 15, settings.metrics, now_s=now_s - 1)
    record_drained(redis_client, "default", 5, settings.metrics, now_s=now_s - 2)
    got = samples(generate_latest(process_registry(collector)).decode())
    assert got[("cioq_drain_rate_ops_per_second", ws)] == 2.0
    assert got[("cioq_backlog_seconds", ws)] == 1.5
    client.close()


@pytest.mark.parametrize(
    ("stored", "label"),
    [("setup:401", "setup"), ("throttle", "throttle"), ("manual", "manual"), ("x", "other")],
)
def test_pause_cause_label(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, stored: str, label: str
) -> None:
    """Each pause shows under its own cause, an operator's as `manual`; one label is 1."""
    settings = make_settings()
    redis_client.set(keys.pause("default", Lane.TRACK), stored, px=60_000)
    client = connect_metrics(settings.redis)
    got = samples(
        generate_latest(
            process_registry(
                QueueStateCollector(settings.queue, settings.metrics, settings.workspaces, client)
            )
        ).decode()
    )
    client.close()
    track_ws = (("lane", "track"), ("workspace", "default"))
    paused = {
        labels[0][1]: value
        for (name, labels), value in got.items()
        if name == "cioq_workspace_paused" and labels[1:] == track_ws
    }
    assert paused == {"throttle": 0, "setup": 0, "manual": 0, "other": 0, label: 1}


def test_old_drain_counts_leave_the_window_and_the_key(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    settings = make_settings(drain_rate_window_s=10)
    key = keys.drain_rate("default")
    record_drained(redis_client, "default", 7, settings.metrics, now_s=1_000)
    record_drained(redis_client, "default", 3, settings.metrics, now_s=1_011)
    assert redis_client.hgetall(key) == {b"1011": b"3"}
    assert 0 < redis_client.ttl(key) <= 20


@pytest.mark.parametrize(
    ("counts", "now_s", "rate"),
    [
        ({}, 100.0, 0.0),
        ({b"95": b"10"}, 100.0, 1.0),
        ({b"89": b"50", b"99": b"20"}, 100.0, 2.0),
        ({b"90": b"10"}, 100.9, 1.0),
    ],
)
def test_drain_rate_counts_only_the_window(
    counts: dict[bytes, bytes], now_s: float, rate: float
) -> None:
    assert drain_rate_per_s(counts, now_s=now_s, window_s=10) == rate


@pytest.mark.parametrize(
    ("backlog", "rate", "oldest_s", "expected"),
    [
        ((0, 0), 0.0, 0.0, 0.0),
        ((0, 0), 5.0, 0.0, 0.0),
        ((30, 10), 4.0, 2.0, 10.0),
        ((30, 10), 0.0, 75.0, 75.0),
    ],
)
def test_backlog_seconds(
    backlog: tuple[int, ...], rate: float, oldest_s: float, expected: float
) -> None:
    lanes = (LaneState(Lane.TRACK, backlog, "", 0.0, 0.0),)
    state = WorkspaceState("w", lanes, oldest_s, 0, rate)
    assert state.backlog_seconds == expected


def test_unreachable_redis_leaves_metrics_working(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(redis_url="redis://127.0.0.1:1/0", metrics_redis_timeout_s=0.2)
    client = connect_metrics(settings.redis)
    registry = process_registry(
        QueueStateCollector(settings.queue, settings.metrics, settings.workspaces, client)
    )
    metrics.observe_ingest("v1.track", 200, 0.01)
    started = time.monotonic()
    text = generate_latest(registry).decode()
    assert time.monotonic() - started < 2
    got = samples(text)
    assert got[("cioq_queue_state_up", ())] == 0
    assert not any(name == "cioq_backlog_entries" for name, _ in got)
    assert got[("cioq_ingest_requests_total", (("route", "v1.track"), ("status", "200")))] >= 1


def test_api_serves_metrics_after_ingest(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(), triggers=RecordingTriggers())
    with serve_in_thread(app) as url, httpx.Client(base_url=url, auth=AUTH, timeout=10) as api:
        before = samples(api.get("/metrics").text)
        key = (
            "cioq_jobs_accepted_total",
            (
                ("lane", "track"),
                ("op_type", "event"),
                ("producer", DEV_INGEST_KEY_NAME),
                ("workspace", "default"),
            ),
        )
        assert api.post("/api/v1/customers/7/events", json={"name": "x"}).status_code == 200
        assert api.get("/nope").status_code == 404
        response = httpx.get(f"{url}/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        after = samples(response.text)
    assert after[key] == before.get(key, 0) + 1
    track = ("cioq_ingest_requests_total", (("route", "v1.track"), ("status", "200")))
    assert after[track] == before.get(track, 0) + 1
    assert after[("cioq_ingest_requests_total", (("route", "unmatched"), ("status", "404")))] >= 1
    assert after[("cioq_backlog_entries", (("workspace", "default"),))] == 1
    assert after[("cioq_queue_state_up", ())] == 1


@given(st.lists(st.text(max_size=40), max_size=200))
@example(["invalid_field\n"])  # `$` in a regex also matches before a final newline
def test_dead_letter_reason_labels_stay_bounded(reasons: list[str]) -> None:
    for reason in reasons:
        metrics.dead_lettered("default", [(reason, Lane.TRACK, "")])
    labels = {
        s.labels["reason"]
        for family in metrics.DEAD_LETTERS.collect()
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert len(labels) <= 6 + metrics.MAX_UPSTREAM_REASONS + 1
    assert all(label == "other" or label.isidentifier() for label in labels)


def test_api_metrics_answer_while_redis_is_down(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(redis_url="redis://127.0.0.1:1/0", metrics_redis_timeout_s=0.2)
    app = create_app(settings, triggers=RecordingTriggers())
    with serve_in_thread(app) as url:
        started = time.monotonic()
        response = httpx.get(f"{url}/metrics", timeout=10)
        assert time.monotonic() - started < 3
        assert httpx.get(f"{url}/healthz").status_code == 200
    assert response.status_code == 200
    assert samples(response.text)[("cioq_queue_state_up", ())] == 0


def test_queue_state_has_a_series_per_lane(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """Pipelines streams count in the workspace's backlog; pauses show their lane."""
    settings = make_settings(cdp_api_key="k")
    redis_client.xadd(keys.shard_keys("default", 2, Lane.PIPELINES).stream, {"c": b"{}"})
    redis_client.xadd(keys.shard_keys("default", 1, Lane.TRACK).stream, {"o": b"{}"})
    redis_client.set(keys.pause("default", Lane.PIPELINES), "setup:401", px=60_000)
    collector = QueueStateCollector(
        settings.queue, settings.metrics, settings.workspaces, connect_metrics(settings.redis)
    )
    got = samples(generate_latest(process_registry(collector)).decode())
    ws = (("workspace", "default"),)
    assert got[("cioq_backlog_entries", ws)] == 2
    for lane, paused in (("track", 0), ("pipelines", 1)):
        assert got[("cioq_lane_backlog_entries", (("lane", lane), *ws))] == 1
        assert got[("cioq_workspace_paused", (("cause", "setup"), ("lane", lane), *ws))] == paused
