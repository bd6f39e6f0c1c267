"""Immediate triggers go onto the broker's list with one LPUSH (`DirectPublisher`): the
message must be what Celery's own ``send_task`` stores, and a worker must run it."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import redis
from celery import Celery

from service.jobs import Lane, Traffic
from service.triggers import BULK_QUEUE, DRAIN_QUEUE, Trigger, Triggers, celery_config

#: Different in every message, or naming the process that sent it.
_PER_MESSAGE = {"id", "root_id", "origin", "correlation_id", "delivery_tag", "reply_to"}


def _popped(client: redis.Redis, queue: str) -> dict[str, Any]:
    raw = client.rpop(queue)
    assert isinstance(raw, bytes)
    return dict(orjson.loads(raw))


def _comparable(message: dict[str, Any]) -> dict[str, Any]:
    headers = {k: v for k, v in message["headers"].items() if k not in _PER_MESSAGE}
    properties = {k: v for k, v in message["properties"].items() if k not in _PER_MESSAGE}
    body = orjson.loads(base64.b64decode(message["body"]))
    return {**message, "headers": headers, "properties": properties, "body": body}


def test_a_direct_trigger_is_the_message_celery_sends(
    redis_client: redis.Redis, redis_url: str
) -> None:
    redis_client.delete(DRAIN_QUEUE, BULK_QUEUE)
    celery = Celery("reference", set_as_current=False)
    celery.conf.update(celery_config(redis_url))
    try:
        celery.send_task(
            "cioq.drain",
            args=("default", 7, str(Lane.APP), str(Traffic.LIVE), False),
            queue=DRAIN_QUEUE,
            ignore_result=True,
        )
        reference = _popped(redis_client, DRAIN_QUEUE)
    finally:
        celery.close()
    triggers = Triggers(redis_url)
    try:
        triggers.send("default", 7, lane=Lane.APP)
        direct = _popped(redis_client, DRAIN_QUEUE)
        triggers.send("default", 7, lane=Lane.APP, bulk=True)
        bulk = _popped(redis_client, BULK_QUEUE)
    finally:
        triggers.close()
    assert _comparable(direct) == _comparable(reference)
    assert direct["headers"]["id"] == direct["headers"]["root_id"]
    assert direct["headers"]["id"] == direct["properties"]["correlation_id"]
    assert bulk["properties"]["delivery_info"]["routing_key"] == BULK_QUEUE
    assert orjson.loads(base64.b64decode(bulk["body"]))[0] == ["default", 7, "app", "live", True]


def test_a_trigger_with_a_countdown_goes_through_celery(
    redis_client: redis.Redis, redis_url: str
) -> None:
    """Celery keeps its ETA; the list gets nothing until then."""
    redis_client.delete(DRAIN_QUEUE)
    triggers = Triggers(redis_url)
    try:
        triggers.send("default", 1, lane=Lane.APP, countdown_s=30)
    finally:
        triggers.close()
    message = _popped(redis_client, DRAIN_QUEUE)
    assert message["headers"]["eta"] is not None


def test_a_group_s_triggers_from_the_event_loop_match_one_by_one_sends(
    redis_client: redis.Redis, redis_url: str
) -> None:
    """`send_all` (the api's path): immediate triggers in one round trip per call, each the
    message `send` would store, in order; a countdown still goes through Celery."""
    redis_client.delete(DRAIN_QUEUE, BULK_QUEUE)
    group = [
        Trigger("default", 3, Lane.APP),
        Trigger("default", 4, Lane.APP),
        Trigger("default", 5, Lane.TRACK, Traffic.BULK),
        Trigger("default", 6, Lane.TRACK, countdown_s=30),
        Trigger("other", 9, Lane.PIPELINES, bulk=True),
    ]
    triggers = Triggers(redis_url)

    async def twice() -> None:
        await triggers.send_all(group)
        await triggers.send_all(group[:1])  # the connection is kept for the next group
        await triggers.aclose()

    try:
        asyncio.run(twice())
        # A new event loop (a restarted server, a test's own) gets a connection of its own.
        asyncio.run(triggers.send_all(group[1:2]))
    finally:
        triggers.close()
    live = [_popped(redis_client, DRAIN_QUEUE) for _ in range(5)]
    bulk = [_popped(redis_client, BULK_QUEUE) for _ in range(2)]
    assert redis_client.llen(DRAIN_QUEUE) == redis_client.llen(BULK_QUEUE) == 0

    def args(message: dict[str, Any]) -> list[Any]:
        return list(orjson.loads(base64.b64decode(message["body"]))[0])

    delayed = [m for m in live if m["headers"]["eta"] is not None]
    assert [args(m) for m in delayed] == [["default", 6, "track", "live", False]]
    assert [args(m) for m in live if m not in delayed] == [
        ["default", 3, "app", "live", False],
        ["default", 4, "app", "live", False],
        ["default", 3, "app", "live", False],
        ["default", 4, "app", "live", False],
    ]
    assert [args(m) for m in bulk] == [
        ["default", 5, "track", "bulk", True],
        ["other", 9, "pipelines", "live", True],
    ]
    reference = Triggers(redis_url)
    try:
        reference.send("default", 3, lane=Lane.APP)
        one_by_one = _popped(redis_client, DRAIN_QUEUE)
    finally:
        reference.close()
    assert _comparable(live[0]) == _comparable(one_by_one)
    assert len({m["headers"]["id"] for m in live + bulk}) == 7
