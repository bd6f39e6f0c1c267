"""Never sent twice, ingest side: the audit of 00f4e48 (F1, F2, F7, F14) as regression tests.

Each test is one of the audit's reproductions turned round: it asserts what must hold, and
failed on 00f4e48. A keyed App send lands on the shard that holds its Idempotency-Key's
marker, so every try stores it once and answers with the first try's job; once the job
is written the producer gets 202 and the status URL, never a 5xx its client would resend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest
import redis
import redis.asyncio as aioredis

from sandbox import SandboxConfig, create_sandbox_app
from service import keys
from service.api.app import create_app
from service.config import Settings
from service.errors import StoredUnconfirmed
from service.jobs import Job
from service.lanes.app.jobs import FIELD_APP, app_job
from service.lanes.app.outcomes import AsyncOutcomes
from service.store import durability
from service.store.connections import connect_async
from service.store.durability import Confirmation
from service.store.queue import Queue
from tests.support.http_server import serve_in_thread
from tests.support.streams import stream_fields

EMAIL = {"transactional_message_id": 7, "to": "a@example.com", "identifiers": {"id": "p1"}}
HEADERS = {"Authorization": "Bearer dev-ingest-key"}


def stored_sends(client: redis.Redis) -> list[str]:
    found = []
    for key in client.scan_iter(match="cioq:q:*"):
        for fields in stream_fields(client, key):
            if FIELD_APP in fields:
                found.append(orjson.loads(fields[FIELD_APP])["id"])
    return found


@pytest.fixture
def api(make_settings: Callable[..., Settings], triggers: Any) -> Iterator[httpx.Client]:
    with serve_in_thread(create_sandbox_app(SandboxConfig())) as sb:
        # What ingest stores, kept in the streams to be counted: no send of the api's own.
        s = make_settings(
            app_api_key="dev-app-key",
            app_url=sb,
            app_send_wait_ms=0,
            shards=64,
            app_inline_sends=False,
        )
        with (
            serve_in_thread(create_app(s, triggers=triggers)) as url,
            httpx.Client(base_url=url, headers=HEADERS, timeout=15) as c,
        ):
            yield c


def test_concurrent_repeats_of_one_key_store_one_send_and_answer_one_job(
    api: httpx.Client, redis_client: redis.Redis
) -> None:
    """F1: eight concurrent tries with one key stored 6 sends on 00f4e48."""
    h = {"Idempotency-Key": "k-concurrent"}
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda _: api.post("/v1/send/email", json=EMAIL, headers=h), range(8))
        )
    assert [a.status_code for a in answers] == [202] * 8
    stored = stored_sends(redis_client)
    assert len(stored) == 1
    assert {a.json()["job_id"] for a in answers} == set(stored)


def test_retry_after_a_lost_answer_stores_nothing_and_answers_the_first_job(
    api: httpx.Client, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F1/F14: the answer's SET failed after the job was stored; the retry stored a second
    send on 00f4e48 (and named a job that was never stored)."""
    real_set = aioredis.Redis.set
    calls = {"n": 0}

    async def set_fails_once(self: aioredis.Redis, name: Any, *a: Any, **kw: Any) -> Any:
        if str(name).startswith("cioq:idem:"):
            calls["n"] += 1
            if calls["n"] == 1:
                raise redis.ConnectionError("Connection reset by peer")
        return await real_set(self, name, *a, **kw)

    monkeypatch.setattr(aioredis.Redis, "set", set_fails_once)
    h = {"Idempotency-Key": "order-42-receipt"}
    first = api.post("/v1/send/email", json=EMAIL, headers=h)
    assert first.status_code == 202  # stored: never a 5xx
    again = api.post("/v1/send/email", json=EMAIL, headers=h)
    assert again.status_code == 202
    assert again.json()["job_id"] == first.json()["job_id"]
    assert stored_sends(redis_client) == [first.json()["job_id"]]
    status = api.get(f"/cioq/v1/jobs/{again.json()['job_id']}")
    assert status.status_code == 200


def test_a_key_reused_for_another_body_is_refused_even_in_the_race(
    api: httpx.Client, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The marker keeps the first try's answer: a different body under the same key meets
    it on the same shard and is refused (422), even when the fast-path answer is missing."""
    h = {"Idempotency-Key": "k-reused"}
    assert api.post("/v1/send/email", json=EMAIL, headers=h).status_code == 202
    redis_client.delete(keys.idempotency("default", "k-reused"))  # as if its SET was lost
    other = api.post("/v1/send/email", json={**EMAIL, "to": "b@example.com"}, headers=h)
    assert other.status_code == 422
    assert len(stored_sends(redis_client)) == 1


def test_a_store_error_after_the_send_is_stored_answers_202(
    api: httpx.Client, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F2: outcomes.create failing after the store was answered 503 on 00f4e48."""
    from service.errors import StoreUnavailable

    async def create_fails(self: AsyncOutcomes, *a: Any, **kw: Any) -> None:
        raise StoreUnavailable("outcome: Timeout connecting to server")

    monkeypatch.setattr(AsyncOutcomes, "create", create_fails)
    first = api.post("/v1/send/email", json=EMAIL)
    assert first.status_code == 202
    assert first.json()["status_url"].endswith(first.json()["job_id"])
    assert stored_sends(redis_client) == [first.json()["job_id"]]


def test_a_store_error_in_the_outcome_wait_answers_202(
    make_settings: Callable[..., Settings],
    triggers: Any,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """F2: the outcome wait failing (a failover during the BLPOP) answered 503."""
    from service.errors import StoreUnavailable

    async def wait_fails(self: AsyncOutcomes, *a: Any, **kw: Any) -> None:
        raise StoreUnavailable("outcome: Connection reset by peer")

    monkeypatch.setattr(AsyncOutcomes, "wait", wait_fails)
    s = make_settings(app_api_key="dev-app-key", app_send_wait_ms=500, app_inline_sends=False)
    with serve_in_thread(create_app(s, triggers=triggers)) as url:
        r = httpx.post(f"{url}/v1/send/email", json=EMAIL, headers=HEADERS, timeout=15)
    assert r.status_code == 202
    assert stored_sends(redis_client) == [r.json()["job_id"]]


def test_an_unconfirmed_write_is_answered_202_not_503(
    api: httpx.Client, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F2: a WAIT that timed out (replica lagging) answered 503 for a send that is queued."""
    lagging = Confirmation(waitaof=False, replicas=1, timeout_ms=50)
    real_commands, real_verify = durability.commands, durability.verify
    monkeypatch.setattr(durability, "commands", lambda _c: real_commands(lagging))
    monkeypatch.setattr(durability, "verify", lambda _c, replies: real_verify(lagging, replies))
    h = {"Idempotency-Key": "k-unconfirmed"}
    first = api.post("/v1/send/email", json=EMAIL, headers=h)
    assert first.status_code == 202
    again = api.post("/v1/send/email", json=EMAIL, headers=h)  # a retry stores nothing more
    assert again.status_code == 202 and again.json()["job_id"] == first.json()["job_id"]
    assert stored_sends(redis_client) == [first.json()["job_id"]]


def _keyed(job_id: str) -> Job:
    return app_job(
        job_id, "/v1/send/email", EMAIL, limit="send", route="send:key:k1", op_type="send_email"
    )


def test_unconfirmed_retries_of_one_request_id_store_once(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """F2 at the Queue: each unconfirmed try raises StoredUnconfirmed (the job is queued),
    and with the key's route the retry finds the marker and stores nothing."""
    s = make_settings(app_api_key="k", shards=64, app_inline_sends=False)

    async def run() -> None:
        client = connect_async(s.redis)
        q = Queue(client, s.redis, s.queue, None)
        q.confirmation = Confirmation(waitaof=False, replicas=1, timeout_ms=50)
        with pytest.raises(StoredUnconfirmed):
            await q.enqueue("default", [_keyed("s1")], request_id="k1")
        with pytest.raises(StoredUnconfirmed):
            await q.enqueue("default", [_keyed("s2")], request_id="k1")
        await client.aclose()

    asyncio.run(run())
    assert stored_sends(redis_client) == ["s1"]
