"""Immediate triggers go onto the broker's list with one LPUSH (`DirectPublisher`): the
message must be what Celery's own ``send_task`` stores, and a worker must run it."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import redis
from celery import Celery

from service.jobs import Lane, Traffic
from service.triggers import BULK_QUEUE, DRAIN_QUEUE, Triggers, celery_config

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
