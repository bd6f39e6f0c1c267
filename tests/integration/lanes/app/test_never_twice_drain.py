"""Never sent twice, drain side: the audit of 00f4e48 (F3, F4, F6, F8) as regression tests.

Each was a reproduction that passed while its bug was present; each asserts the right
behaviour now. A send that died mid-POST keeps its in-flight note until its head is
trimmed; a drain that lost its lease can neither add a dead letter nor erase the next
holder's note; one shard entry gets one letter; one message confirms one send.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
import redis

from service import keys
from service.config import Settings
from service.delivery.crash_search import InflightNote
from service.delivery.outcomes import Outcome, OutcomeClass
from service.errors import StoreUnavailable
from service.jobs import Job, Lane
from service.lanes.app.client import AppClient
from service.lanes.app.confirm import Confirmer
from service.lanes.app.jobs import app_job
from service.lanes.app.rate_limit import RateLimiter
from service.lanes.app.sender import AppSender
from service.store.connections import connect_async
from service.store.dead_letter_admin import DeadLetterAdmin, DeadLetterFilter
from service.store.dead_letters import DeadLetterStore
from service.store.queue import Queue
from service.store.shards import ShardStore
from tests.support.drain import build_drainer, dlq, enqueue, person_op
from workers.drain.engine import Drainer
from workers.drain.settings import DrainerSettings

EMAIL = {"transactional_message_id": 7, "to": "a@example.com", "identifiers": {"id": "p1"}}


@pytest.fixture
def settings(make_settings: Callable[..., Settings], app_sandbox_url: str) -> Settings:
    return make_settings(app_api_key="dev-app-key", app_url=app_sandbox_url, upstream_timeout_s=2)


def send(n: int) -> Job:
    return app_job(
        f"s{n}", "/v1/send/email", EMAIL, limit="send", route=f"send:s{n}", op_type="send_email"
    )


def put(client: redis.Redis, shard: int, jobs: list[Job]) -> keys.ShardKeys:
    shard_keys = keys.shard_keys("default", shard, jobs[0].lane)
    for job in jobs:
        client.xadd(shard_keys.stream, {job.field: job.payload})
    return shard_keys


def received(app_sandbox: httpx.Client) -> list[Any]:
    return [r["op"] for r in app_sandbox.get("/_sandbox/received").json()["records"]]


def replay_ambiguous(settings: Settings) -> int:
    async def run() -> int:
        client = connect_async(settings.redis)
        admin = DeadLetterAdmin(client, Queue(client, settings.redis, settings.queue, None))
        result = await admin.replay(
            "default",
            DeadLetterFilter(outcome_class="ambiguous"),
            dry_run=False,
            may_deliver_twice=True,
            who="t",
        )
        await client.aclose()
        return result.done

    return asyncio.run(run())


def test_an_interrupted_send_keeps_its_note_through_a_store_error(
    settings: Settings,
    redis_client: redis.Redis,
    app_sandbox: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """F3: the note was deleted before the letter; one Redis error and the job was POSTed."""
    shard = put(redis_client, 0, [send(1)])
    store = ShardStore(redis_client)
    head = store.read(shard, after=None, count=1)[0]
    lease = store.acquire(shard, lease_ms=60_000)
    assert lease is not None
    lease.mark_inflight(InflightNote(head=head.id, count=1))  # worker 1 died mid-POST
    lease.release()

    original = DeadLetterStore.add
    calls = {"n": 0}

    def flaky_add(self: DeadLetterStore, *a: Any, **kw: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise StoreUnavailable("dead-lettering: Timeout reading from socket")
        return original(self, *a, **kw)

    monkeypatch.setattr(DeadLetterStore, "add", flaky_add)
    with pytest.raises(StoreUnavailable):  # worker 2: one Redis blip while dead-lettering
        build_drainer(settings, redis_client).drain("default", 0, shard.lane)
    assert redis_client.hget(shard.inflight, "head") == head.id  # the note is kept
    report = build_drainer(settings, redis_client).drain("default", 0, shard.lane)  # worker 3
    assert report.requests == 0 and report.dead_lettered == 1
    assert received(app_sandbox) == []
    assert len(dlq(redis_client)) == 1


def test_a_stale_drain_adds_no_second_letter_and_replay_sends_once(
    settings: Settings, redis_client: redis.Redis, app_sandbox: httpx.Client
) -> None:
    """F4: a drain whose slow POST outlived its lease added a second ambiguous letter."""
    shard = put(redis_client, 0, [send(1)])

    class SlowAmbiguous(AppSender):
        def send_batch(self, body: bytes, *, op_count: int) -> Outcome:
            redis_client.delete(shard.lease)  # the POST hangs past the lease: B takes over
            b = build_drainer(settings, redis_client).drain("default", 0, shard.lane)
            assert b.dead_lettered == 1  # B: "worker died during the send"
            return Outcome(OutcomeClass.AMBIGUOUS, 502, "ambiguous: HTTP 502")

    a = build_drainer(settings, redis_client)
    ws = settings.workspaces[0]
    a.clients = {
        **a.clients,
        ("default", shard.lane): SlowAmbiguous(
            ws, settings.app, settings.redis, timeout_s=settings.drain.upstream_timeout_s
        ),
    }
    report = a.drain("default", 0, shard.lane)
    assert report.stopped == "lease_lost"
    letters = dlq(redis_client)
    assert [orjson.loads(f[b"payload"])["id"] for f in letters] == ["s1"]

    assert replay_ambiguous(settings) == 1  # the operator replays class ambiguous
    for n in range(settings.queue.shards):
        build_drainer(settings, redis_client).drain("default", n, shard.lane)
    assert len(received(app_sandbox)) == 1


def test_a_letter_is_added_once_per_entry_even_when_its_write_is_retried(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """F10's consequence: a dead-letter write whose reply was lost and was sent again (a
    cluster client's retry) adds nothing the second time."""
    shard = put(redis_client, 0, [send(1)])
    store = ShardStore(redis_client)
    head = store.read(shard, after=None, count=1)[0]
    lease = store.acquire(shard, lease_ms=60_000)
    assert lease is not None
    from workers.drain.send import Delivery
    from workers.drain.settings import Limits

    drainer = build_drainer(settings, redis_client)
    client = drainer.clients[("default", shard.lane)]
    delivery = Delivery(
        "default",
        shard.lane,
        store,
        {shard: lease},
        DeadLetterStore(redis_client),
        client,
        Limits.of(shard.lane, settings),
        settings.metrics,
        lambda: int(time.time() * 1000),
    )
    for _ in range(2):
        delivery._dead_letter([head], reason="ambiguous", outcome_class="ambiguous")
    assert len(dlq(redis_client)) == 1


def test_a_stale_throttled_drain_keeps_the_new_holders_note(
    settings: Settings, redis_client: redis.Redis, app_sandbox: httpx.Client
) -> None:
    """F4: a stale drain's late 429 deleted the new holder's note (a bare DEL); the new
    holder then died and its send was POSTed again."""
    shard = put(redis_client, 0, [send(1), send(2)])
    store = ShardStore(redis_client)
    h1, h2 = store.read(shard, after=None, count=2)

    class SlowThrottled(AppSender):
        def send_batch(self, body: bytes, *, op_count: int) -> Outcome:
            redis_client.delete(shard.lease)  # A's POST hangs past its lease
            b = store.acquire(shard, lease_ms=60_000)  # drain B takes the shard
            assert b is not None
            b.resolve(h1.id)  # B set H1 aside (interrupted), moves on to H2
            b.mark_inflight(InflightNote(head=h2.id, count=1))
            self.client.send("POST", "/v1/send/email", orjson.dumps(EMAIL))  # B's POST of H2
            redis_client.delete(shard.lease)  # ... and B's worker is OOM-killed
            return Outcome(OutcomeClass.THROTTLE, 429, "HTTP 429", retry_after_s=0.01)

    a = build_drainer(settings, redis_client)
    ws = settings.workspaces[0]
    a.clients = {
        **a.clients,
        ("default", shard.lane): SlowThrottled(
            ws, settings.app, settings.redis, timeout_s=settings.drain.upstream_timeout_s
        ),
    }
    report = a.drain("default", 0, shard.lane)
    assert report.stopped == "lease_lost"  # A notices it lost the lease
    assert redis_client.hget(shard.inflight, "head") == h2.id  # ... and B's note is kept
    redis_client.delete(keys.pause("default", shard.lane))
    c = build_drainer(settings, redis_client).drain("default", 0, shard.lane)
    assert c.requests == 0 and c.dead_lettered == 1  # H2 is ambiguous, not resent
    assert len(received(app_sandbox)) == 1


def test_one_message_confirms_one_of_two_concurrent_ambiguous_sends(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """F6: two lookups before either claim was written both took the same message."""
    now = int(time.time())
    message = {
        "id": "dlv-1",
        "type": "email",
        "created": now,
        "transactional_message_id": 7,
        "recipient": "a@example.com",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"messages": [message]})

    ws = settings.workspaces[0]
    app = AppClient(ws, timeout_s=2, transport=httpx.MockTransport(handler))
    limiter = RateLimiter(redis_client, settings.app)
    c1 = Confirmer(redis_client, limiter, app, ws)
    c2 = Confirmer(redis_client, limiter, app, ws)
    env = {"path": "/v1/send/email", "body": EMAIL}
    f1 = c1.find(env, since_s=now)
    f2 = c2.find(env, since_s=now)
    found = [f for f in (f1, f2) if f is not None]
    assert [f.delivery_id for f in found] == ["dlv-1"]


def test_exhaustion_after_a_partial_bisection_letters_only_undelivered_ops(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """F8: ops a half had delivered (200) were dead-lettered when the retry budget ran out."""
    s = make_settings(retry_max_attempts=1, shards=1)
    enqueue(redis_client, [person_op(i) for i in range(4)])
    sent: list[int] = []

    class Scripted:
        def send_batch(self, body: bytes, *, op_count: int) -> Outcome:
            sent.append(op_count)
            if len(sent) == 1:
                return Outcome(OutcomeClass.INVALID, 400, "bad op somewhere")
            if len(sent) == 2:
                return Outcome(OutcomeClass.SUCCESS, 200)  # first half delivered
            return Outcome(OutcomeClass.TRANSIENT, 500, "HTTP 500")

        def close(self) -> None: ...

    d = Drainer(
        DrainerSettings.of(s),
        ShardStore(redis_client),
        DeadLetterStore(redis_client),
        {("default", Lane.TRACK): Scripted()},
        None,
        rng=lambda: 1.0,
    )
    d.drain("default", 0, Lane.TRACK)
    ns = [orjson.loads(f[b"payload"])["attributes"]["n"] for f in dlq(redis_client)]
    assert sent == [4, 2, 2]
    assert ns == [2, 3]
