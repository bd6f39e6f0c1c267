"""The index of delivered jobs (`record_sent`, one `lua/sent_record.lua` call per request):
what it keeps per person and per event, for how long, and that it never raises."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from service import keys
from service.jobs import Lane
from service.lanes.track.jobs import v2_job
from service.store import sent_index
from service.store.sent_index import SentJob, find_sent, record_sent
from service.store.shards import Entry
from tests.support.late import event, identify

SHARD = keys.shard_keys("default", 0, Lane.TRACK)


def _entries(ops: list[dict[str, Any]], first_ms: int = 1_700_000_000_000) -> list[Entry]:
    return [
        Entry(f"{first_ms + i}-0".encode(), (job := v2_job(op)).kind, job.payload, SHARD, "")
        for i, op in enumerate(ops)
    ]


def _kept(client: redis.Redis, ident: str, value: str) -> list[str]:
    rows: list[bytes] = client.zrange(keys.sent_person("default", ident, value), 0, -1)  # type: ignore[assignment]
    return [SentJob.parse(raw).entry for raw in rows]


def _record(client: redis.Redis, ops: list[dict[str, Any]], now_ms: int, **kw: Any) -> int:
    first_ms = kw.pop("first_ms", 1_700_000_000_000)
    options: dict[str, Any] = {"window_s": 60, "per_person": 3, **kw}
    return record_sent(client, "default", "track", _entries(ops, first_ms), now_ms, **options)


def test_a_person_keeps_the_newest_copies_under_each_identifier(
    redis_client: redis.Redis,
) -> None:
    now_ms = int(time.time() * 1000)
    ops = [identify(1, seq=i) | {"identifiers": {"id": "p1", "email": "a@x"}} for i in range(5)]
    assert _record(redis_client, ops, now_ms) == 5
    newest = [f"{SHARD.tag}:{1_700_000_000_000 + i}-0" for i in (2, 3, 4)]
    assert sorted(_kept(redis_client, "id", "p1")) == newest
    assert sorted(_kept(redis_client, "email", "a@x")) == newest
    ttl_ms = redis_client.pttl(keys.sent_person("default", "id", "p1"))
    assert 0 < ttl_ms <= 60_000


def test_copies_older_than_the_window_go_at_the_next_write(redis_client: redis.Redis) -> None:
    now_ms = int(time.time() * 1000)
    _record(redis_client, [identify(2)], now_ms - 61_000)
    _record(redis_client, [identify(2)], now_ms, first_ms=1_800_000_000_000)
    assert _kept(redis_client, "id", "p2") == [f"{SHARD.tag}:1800000000000-0"]


def test_an_event_is_kept_under_its_id_for_the_window(redis_client: redis.Redis) -> None:
    now_ms = int(time.time() * 1000)
    op = event(3)
    assert _record(redis_client, [op], now_ms) == 1
    key = keys.sent_event("default", op["id"])
    assert 0 < redis_client.pttl(key) <= 60_000
    activity = {"type": "failed_event", "data": {"event_id": op["id"]}, "timestamp": now_ms // 1000}
    found = find_sent(redis_client, "default", activity)
    assert found is not None and found.entry == f"{SHARD.tag}:1700000000000-0"


def test_a_request_over_the_call_cap_is_indexed_whole(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sent_index, "MAX_CALL_JOBS", 2)
    now_ms = int(time.time() * 1000)
    ops = [identify(10 + i % 2, seq=i) for i in range(5)] + [event(12)]
    assert _record(redis_client, ops, now_ms, per_person=10) == 6
    assert len(_kept(redis_client, "id", "p10")) == 3
    assert len(_kept(redis_client, "id", "p11")) == 2
    assert len(_kept(redis_client, "id", "p12")) == 1


def test_a_refused_write_costs_links_only(redis_client: redis.Redis) -> None:
    redis_client.set(keys.sent_person("default", "id", "p20"), "not a sorted set")
    assert _record(redis_client, [identify(20)], int(time.time() * 1000)) == 0


def test_nothing_is_written_when_the_window_is_zero(redis_client: redis.Redis) -> None:
    assert _record(redis_client, [identify(30)], int(time.time() * 1000), window_s=0) == 0
    assert _kept(redis_client, "id", "p30") == []
