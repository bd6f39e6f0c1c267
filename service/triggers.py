"""Drain triggers: the Celery messages that wake a worker for one shard.

A trigger carries no job, only ``(workspace, shard, lane, traffic, bulk)``; losing or
duplicating one can cost latency but never a job, because jobs live in the shard's
stream until resolved. The producer side is here (ingest and the sweeper send
triggers); `workers` registers the task under `DRAIN_TASK`.

Live traffic first, with what Celery offers: triggers for live jobs go to `DRAIN_QUEUE`,
triggers for bulk jobs and for backlogs (a drain that found more than it may send at
once) to `BULK_QUEUE`. Workers consume both with kombu's ``sorted`` queue order (its
BRPOP names the live queue first, so Redis pops from it whenever it holds a trigger)
and with prefetch disabled (a busy worker reserves nothing, so no bulk trigger waits in
its memory ahead of a live one). Drains from the bulk queue run on a short budget, so a
live trigger waits for a process at most about one bulk budget.

Cost: an App send is about one trigger, so a trigger must cost little. One without a
countdown is one LPUSH of the message Celery would store (`DirectPublisher`; from the
api's event loop `AsyncDirectPublisher`, a group's triggers in one LPUSH per queue), and
workers keep no unacked copy of what they fetch (no kombu ack emulation): a trigger lost
with a killed worker is re-sent by the sweeper once the shard's marker expires.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis
import redis.asyncio
from celery import Celery
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from service.config import RedisSettings
from service.jobs import Lane, Traffic

DRAIN_TASK = "cioq.drain"
DRAIN_QUEUE = "cioq.drain"
BULK_QUEUE = "cioq.drain.bulk"


class WorkerQueues(StrEnum):
    """Which trigger queues a worker consumes (`cioq worker --queues`)."""

    #: Both, live first: the default, and what one pool of workers should run.
    ALL = "all"
    #: Live triggers only: a pool of its own for live traffic, when backfills would
    #: otherwise take the CPU the live drains need (docs/live-and-bulk.md).
    LIVE = "live"
    #: Bulk triggers only (backlogs and bulk traffic): the other pool of such a split.
    BULK = "bulk"

    @property
    def names(self) -> tuple[str, ...]:
        if self is WorkerQueues.LIVE:
            return (DRAIN_QUEUE,)
        if self is WorkerQueues.BULK:
            return (BULK_QUEUE,)
        # Live first: with the "sorted" queue order BRPOP names "cioq.drain" before
        # "cioq.drain.bulk", so Redis pops a live trigger whenever one waits.
        return (DRAIN_QUEUE, BULK_QUEUE)


def celery_config(broker_url: str, *, broker_ssl: dict[str, Any] | None = None) -> dict[str, Any]:
    """Celery settings shared by producers and workers; `broker_ssl` from
    `service.store.connections.broker_tls` (verified TLS for ``rediss://``)."""
    return {
        "broker_url": broker_url,
        "broker_use_ssl": broker_ssl,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # Triggers are cheap and idempotent: a short visibility timeout only means
            # an unacked trigger is redelivered sooner, never a lost or doubled job.
            "visibility_timeout": 300,
            # No unacked copy of each trigger (a hash and a sorted-set entry written when
            # it is fetched, deleted when acked: two round trips per trigger, which cost
            # the worker's main process more than running the drain). A trigger lost with
            # a killed worker is re-sent by the sweeper once its marker expires
            # (`trigger_ttl_ms`, 2 s), long before the visibility timeout would restore it.
            "ack_emulation": False,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "health_check_interval": 25,
            # BRPOP names the queues sorted: "cioq.drain" (live) before "cioq.drain.bulk".
            "queue_order_strategy": "sorted",
        },
        "task_default_queue": DRAIN_QUEUE,
        "task_ignore_result": True,
        "task_acks_late": False,
        "worker_prefetch_multiplier": 1,
        # Fetch a trigger only when a pool process is free (Redis brokers only).
        "worker_disable_prefetch": True,
        "worker_send_task_events": False,
        "worker_hijack_root_logger": False,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_backend": None,
    }


def broker_tls(redis: RedisSettings) -> dict[str, Any] | None:
    """Celery's ``broker_use_ssl`` for the drain-trigger broker. kombu, given no options
    for ``rediss://``, connects with ``CERT_NONE`` (it only logs a warning), so the
    broker's password would cross TLS that anyone on the path can intercept."""
    if urlsplit(redis.celery_broker_url).scheme != "rediss":
        return None
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}
    if redis.redis_ca_file:
        options["ssl_ca_certs"] = redis.redis_ca_file
    return options


@dataclass(frozen=True, slots=True)
class Trigger:
    """One drain trigger: drain `shard` of `workspace`'s `lane` now or after `countdown_s`.

    `bulk` (always so for bulk traffic) sends it to the bulk queue."""

    workspace: str
    shard: int
    lane: Lane
    traffic: Traffic = Traffic.LIVE
    bulk: bool = False
    countdown_s: float = 0.0

    @property
    def to_bulk(self) -> bool:
        return self.bulk or self.traffic is Traffic.BULK

    @property
    def queue(self) -> str:
        return BULK_QUEUE if self.to_bulk else DRAIN_QUEUE

    @property
    def args(self) -> tuple[str, int, str, str, bool]:
        return (self.workspace, self.shard, str(self.lane), str(self.traffic), self.to_bulk)


class Triggers:
    """Sends drain triggers through Celery's broker."""

    def __init__(
        self,
        broker_url: str,
        *,
        broker_ssl: dict[str, Any] | None = None,
        app: Celery | None = None,
    ) -> None:
        """Use `app` (a worker's own Celery app) or a producer-only app for `broker_url`."""
        self._own_app = app is None
        if app is None:
            app = Celery("cioq-producer", set_as_current=False)
            app.conf.update(celery_config(broker_url, broker_ssl=broker_ssl))
        self.app = app
        plain = urlsplit(broker_url).scheme == "redis" and broker_ssl is None
        self._direct = DirectPublisher(broker_url) if plain else None
        self._async_direct = AsyncDirectPublisher(broker_url) if plain else None

    @classmethod
    def for_settings(cls, redis: RedisSettings) -> Triggers:
        """A producer for the configured broker, with its TLS verified (``rediss://``)."""
        return cls(redis.celery_broker_url, broker_ssl=broker_tls(redis))

    def send(
        self,
        workspace: str,
        shard: int,
        *,
        lane: Lane,
        traffic: Traffic = Traffic.LIVE,
        bulk: bool = False,
        countdown_s: float = 0.0,
    ) -> None:
        """Ask a worker to drain `shard` of `workspace`'s `lane` (see `Trigger`)."""
        self._send(Trigger(workspace, shard, lane, traffic, bulk, countdown_s))

    def _send(self, trigger: Trigger) -> None:
        if trigger.countdown_s <= 0 and self._direct is not None:
            self._direct.publish(trigger.queue, trigger.args)
            return
        self.app.send_task(
            DRAIN_TASK,
            args=trigger.args,
            countdown=trigger.countdown_s if trigger.countdown_s > 0 else None,
            queue=trigger.queue,
            ignore_result=True,
        )

    async def send_all(self, triggers: Sequence[Trigger]) -> None:
        """`send` each of `triggers` from the event loop. The immediate ones (an App
        send's) go out in one round trip on the loop: handed to a thread, each cost the
        api 164-190 µs of CPU, against 101-117 here. Those with a countdown go through
        Celery, whose producer blocks, in a thread."""
        direct = self._async_direct
        now = [t for t in triggers if direct is not None and t.countdown_s <= 0]
        later = [t for t in triggers if direct is None or t.countdown_s > 0]
        if direct is not None and now:
            await direct.publish(now)
        if later:
            await asyncio.to_thread(self._send_each, later)

    def _send_each(self, triggers: Sequence[Trigger]) -> None:
        for trigger in triggers:
            self._send(trigger)

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        if self._own_app:
            self.app.close()

    async def aclose(self) -> None:
        """`close`, and the event loop's connection too."""
        if self._async_direct is not None:
            await self._async_direct.aclose()
        self.close()


#: A task message's "embed" part: no callbacks, errbacks, chain or chord.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def task_message(queue: str, args: tuple[Any, ...], *, origin: str) -> bytes:
    """A drain trigger as Celery (task protocol 2) and kombu's Redis transport store it:
    what ``send_task`` would LPUSH, without its machinery (tests/unit/drain compares)."""
    task_id = str(uuid.uuid4())
    body = orjson.dumps([list(args), {}, _EMBED])
    return orjson.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py",
                "task": DRAIN_TASK,
                "id": task_id,
                "shadow": None,
                "eta": None,
                "expires": None,
                "group": None,
                "group_index": None,
                "retries": 0,
                "timelimit": [None, None],
                "root_id": task_id,
                "parent_id": None,
                "argsrepr": repr(args),
                "kwargsrepr": "{}",
                "origin": origin,
                "ignore_result": True,
                "replaced_task_nesting": 0,
                "stamped_headers": None,
                "stamps": {},
            },
            "properties": {
                "correlation_id": task_id,
                "reply_to": "",
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


#: Both direct publishers' broker connections: a connection error is retried twice.
_BROKER_OPTIONS: dict[str, Any] = {
    "socket_timeout": 10,
    "socket_connect_timeout": 5,
    "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
}
_RETRIES = 2


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=1.0, base=0.05)


def _origin() -> str:
    """The sending process, as a message's ``origin`` header names it."""
    return f"gen{os.getpid()}@{os.uname().nodename}"


class DirectPublisher:
    """Sends an immediate trigger with one LPUSH onto its queue's list, as kombu would.

    ``send_task`` cost the api more than storing an App send did (a third of its CPU per
    send: message building, kombu's producer and its retry wrapper); a trigger is only
    ``(workspace, shard, lane, traffic, bulk)``. Triggers with a countdown (Celery keeps
    their ETA) and brokers behind TLS still go through Celery. A connection error is
    retried twice; a trigger sent twice or lost costs latency, never a job.
    """

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        self._client: redis.Redis | None = None
        self._pid = 0
        self._origin = ""

    def publish(self, queue: str, args: tuple[Any, ...]) -> None:
        if self._client is None or self._pid != os.getpid():  # never shared across a fork
            self._pid = os.getpid()
            self._origin = _origin()
            self._client = redis.Redis.from_url(
                self.broker_url, retry=Retry(_backoff(), _RETRIES), **_BROKER_OPTIONS
            )
        self._client.lpush(queue, task_message(queue, args, origin=self._origin))

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
        self._client = None


class AsyncDirectPublisher:
    """`DirectPublisher` for the event loop: a group's immediate triggers are one LPUSH
    per queue (its values pop in the order given), retried alike."""

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        self._client: redis.asyncio.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._origin = _origin()

    def _connected(self) -> redis.asyncio.Redis:
        # A connection belongs to the loop that opened it (tests run one loop per test).
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._loop = loop
            self._client = redis.asyncio.Redis.from_url(
                self.broker_url, retry=AsyncRetry(_backoff(), _RETRIES), **_BROKER_OPTIONS
            )
        return self._client

    async def publish(self, triggers: Sequence[Trigger]) -> None:
        by_queue: dict[str, list[bytes]] = {}
        for trigger in triggers:
            message = task_message(trigger.queue, trigger.args, origin=self._origin)
            by_queue.setdefault(trigger.queue, []).append(message)
        client = self._connected()
        if len(by_queue) == 1:
            [(queue, messages)] = by_queue.items()
            await client.lpush(queue, *messages)
            return
        pipe = client.pipeline(transaction=False)
        for queue, messages in by_queue.items():
            pipe.lpush(queue, *messages)
        await pipe.execute()

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = self._loop = None
