"""Coalescing inside a real drain: real Redis, a real sandbox over HTTP, CIOQ_COALESCE on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import redis
from prometheus_client import REGISTRY

from service import keys
from service.config import Settings
from service.jobs import Lane
from tests.support.customerio_model import replay
from tests.support.drain import build_drainer, dlq, enqueue


def settings_for(make_settings: Callable[..., Settings], url: str, coalesce: bool) -> Settings:
    return make_settings(
        shards=1, track_url=url, max_batch_bytes=20_000, max_op_bytes=2000, coalesce=coalesce
    )


def identify(person: int, **attrs: Any) -> dict[str, Any]:
    return {
        "type": "person",
        "action": "identify",
        "identifiers": {"id": f"p{person}"},
        "attributes": attrs,
    }


def workload() -> list[dict[str, Any]]:
    """Five people, each identified four times in a row, with an event in the middle."""
    ops: list[dict[str, Any]] = []
    for round_ in range(4):
        for person in range(5):
            ops.append(identify(person, step=round_, **{f"k{round_}": round_}))
            if round_ == 1 and person == 2:
                ops.append({**identify(2), "action": "event", "name": "mid", "attributes": {}})
    return ops


def received_ops(sandbox: httpx.Client) -> list[dict[str, Any]]:
    return [r["op"] for r in sandbox.get("/_sandbox/received").json()["records"]]


def saved_metric() -> float:
    value = REGISTRY.get_sample_value("cioq_ops_coalesced_total", {"workspace": "default"})
    return value or 0.0


def test_drain_coalesces_and_leaves_the_same_state(
    make_settings: Callable[..., Settings],
    sandbox_url: str,
    sandbox: httpx.Client,
    redis_client: redis.Redis,
) -> None:
    ops = workload()
    enqueue(redis_client, ops)
    before = saved_metric()
    drainer = build_drainer(settings_for(make_settings, sandbox_url, True), redis_client)
    report = drainer.drain("default", 0, Lane.TRACK)
    assert report.stopped == "empty"
    sent = received_ops(sandbox)
    # p2's event splits its run in two: 4 people x 1 op + p2 x 2 ops + the event.
    assert len(sent) == 7
    assert replay(sent) == replay(ops)
    assert saved_metric() - before == len(ops) - len(sent)
    assert report.delivered == len(ops)
    assert redis_client.xlen(keys.shard_keys("default", 0, Lane.TRACK).stream) == 0


def test_coalescing_is_off_by_default(
    make_settings: Callable[..., Settings],
    sandbox_url: str,
    sandbox: httpx.Client,
    redis_client: redis.Redis,
) -> None:
    ops = workload()
    enqueue(redis_client, ops)
    settings = make_settings(shards=1, track_url=sandbox_url)
    assert settings.limits.coalesce is False
    assert build_drainer(settings, redis_client).drain("default", 0, Lane.TRACK).stopped == "empty"
    assert received_ops(sandbox) == ops


def test_item_error_on_a_merged_op_dead_letters_every_op_it_carried(
    make_settings: Callable[..., Settings],
    sandbox_url: str,
    sandbox: httpx.Client,
    redis_client: redis.Redis,
) -> None:
    ops = [identify(1, a=1), identify(2, b=1), identify(1, sandbox_poison="207"), identify(3, c=1)]
    enqueue(redis_client, ops)
    drainer = build_drainer(settings_for(make_settings, sandbox_url, True), redis_client)
    report = drainer.drain("default", 0, Lane.TRACK)
    assert report.stopped == "empty"
    assert [op["identifiers"]["id"] for op in received_ops(sandbox)] == ["p2", "p3"]
    letters = [orjson.loads(f[b"payload"]) for f in dlq(redis_client)]
    assert letters == [ops[0], ops[2]]
    assert redis_client.xlen(keys.shard_keys("default", 0, Lane.TRACK).stream) == 0
