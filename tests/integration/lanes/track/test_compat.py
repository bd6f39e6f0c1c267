"""Track API compatibility: region lookup, Idempotency-Key, v2 batches beyond 500 kB.

Real Redis and real HTTP throughout; the big-batch test drains into the sandbox with a
real Drainer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis
import redis.asyncio as aioredis

from service import keys
from service.api.app import create_app
from service.config import Settings
from service.jobs import Lane
from service.lanes.track.jobs import v2_job
from service.store.queue import Queue
from tests.support.drain import build_drainer
from tests.support.http_server import serve_in_thread
from tests.support.ingest import AUTH, queued
from tests.support.processes import wait_until
from tests.support.triggers import RecordingTriggers


@pytest.fixture
def api(
    make_settings: Callable[..., Settings], triggers: RecordingTriggers
) -> Iterator[httpx.Client]:
    settings = make_settings(region="eu", environment_id=4242, idempotency_window_s=60)
    with (
        serve_in_thread(create_app(settings, triggers=triggers)) as url,
        httpx.Client(base_url=url, auth=AUTH, timeout=30) as c,
    ):
        yield c


def test_region_answers_for_the_callers_workspace(api: httpx.Client) -> None:
    """GET /api/v1/accounts/region: cioq's own URL, the workspace's region and id."""
    r = api.get("/api/v1/accounts/region")
    assert r.status_code == 200
    assert r.json() == {
        "url": str(api.base_url).rstrip("/"),
        "region": "eu",
        "environment_id": 4242,
    }
    with httpx.Client(base_url=str(api.base_url), timeout=10) as anon:
        assert anon.get("/api/v1/accounts/region").status_code == 401


def test_repeat_with_idempotency_key_returns_first_answer_and_queues_nothing(
    api: httpx.Client, redis_client: redis.Redis
) -> None:
    """The second send of a key answers like the first, marked replayed; one job is stored."""
    headers = {"Idempotency-Key": "order-17"}
    first = api.post("/api/v1/customers/7/events", json={"name": "paid"}, headers=headers)
    again = api.post("/api/v1/customers/7/events", json={"name": "paid"}, headers=headers)
    assert (first.status_code, first.json()) == (200, {})
    assert (again.status_code, again.json()) == (200, {})
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert len(queued(redis_client)) == 1
    ttl_ms = redis_client.pttl(keys.idempotency("default", "order-17"))
    assert 0 < ttl_ms <= 60_000
    other = api.post(
        "/api/v1/customers/7/events", json={"name": "paid"}, headers={"Idempotency-Key": "order-18"}
    )
    assert other.status_code == 200 and len(queued(redis_client)) == 2


def test_replay_keeps_a_204_answer(api: httpx.Client, redis_client: redis.Redis) -> None:
    """A form submit answers 204 both times and is queued once."""
    headers = {"Idempotency-Key": "form-1"}
    body = {"data": {"email": "a@example.com"}}
    codes = [
        api.post("/api/v1/forms/f1/submit", json=body, headers=headers).status_code
        for _ in range(2)
    ]
    assert codes == [204, 204]
    assert redis_client.xlen(_all_streams(redis_client)[0]) == 1


def _all_streams(client: redis.Redis) -> list[bytes]:
    return sorted(client.scan_iter(match="cioq:q:*"))


@pytest.mark.parametrize(
    ("key", "rule"),
    [("k" * 256, "max_length"), ("has space", "format"), ("", "format")],
    ids=["too-long", "space", "empty"],
)
def test_bad_idempotency_key_is_400(
    api: httpx.Client, redis_client: redis.Redis, key: str, rule: str
) -> None:
    """A malformed key is refused, naming the header and the rule; nothing is queued."""
    r = api.put("/api/v1/customers/1", json={}, headers={"Idempotency-Key": key})
    assert r.status_code == 400
    error = r.json()["errors"][0]
    assert (error["field"], error["rule"]) == ("Idempotency-Key", rule)
    assert queued(redis_client) == []


def test_refused_request_is_not_remembered(api: httpx.Client, redis_client: redis.Redis) -> None:
    """A 400 under a key does not burn it: the corrected request with that key is queued."""
    headers = {"Idempotency-Key": "fix-me"}
    assert api.post("/api/v1/customers/1/events", json={}, headers=headers).status_code == 400
    assert (
        api.post("/api/v1/customers/1/events", json={"name": "x"}, headers=headers).status_code
        == 200
    )
    assert len(queued(redis_client)) == 1


def test_keys_are_per_workspace(
    make_settings: Callable[..., Settings], triggers: RecordingTriggers, redis_client: redis.Redis
) -> None:
    """The same key from two workspaces is two requests."""
    workspaces = '[{"name": "b", "site_id": "s-b", "api_key": "k-b", "ingest_keys": "ingest-b"}]'
    app = create_app(make_settings(workspaces_json=workspaces), triggers=triggers)
    headers = {"Idempotency-Key": "same"}
    with serve_in_thread(app) as url:
        for auth in (AUTH, ("s-b", "ingest-b")):
            r = httpx.put(f"{url}/api/v1/customers/1", json={}, headers=headers, auth=auth)
            assert r.status_code == 200 and "idempotent-replayed" not in r.headers
    assert (
        redis_client.exists(keys.idempotency("default", "same"), keys.idempotency("b", "same")) == 2
    )


def test_concurrent_repeats_store_once(
    make_settings: Callable[..., Settings], redis_url: str, redis_client: redis.Redis
) -> None:
    """Many concurrent enqueue_once calls with one key: one stores, the rest get its answer."""
    settings = make_settings()
    jobs = [
        v2_job({"type": "person", "action": "delete", "identifiers": {"id": f"p{i}"}})
        for i in range(5)
    ]

    async def race() -> list[bytes | None]:
        client = aioredis.Redis.from_url(redis_url, max_connections=64)
        queue = Queue(client, settings.redis, settings.queue, None)
        try:
            return await asyncio.gather(
                *(
                    queue.enqueue_once(
                        "default", jobs, key="k", answer=f"a{i}".encode(), window_ms=60_000
                    )
                    for i in range(40)
                )
            )
        finally:
            await client.aclose()

    answers = asyncio.run(race())
    stored = [i for i, a in enumerate(answers) if a is None]
    assert len(stored) == 1
    winner = f"a{stored[0]}".encode()
    assert all(a == winner for a in answers if a is not None)
    assert len(queued(redis_client)) == 5


def test_the_storing_try_answers_first_when_a_repeat_remembers_its_answer_before_it(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    """A repeat that found the jobs' markers writes the answer under the key before the try
    that stored them: that try is still the original (not `idempotent-replayed`)."""
    settings = make_settings()
    jobs = [v2_job({"type": "person", "action": "delete", "identifiers": {"id": "p1"}})]

    async def interleaved() -> tuple[bytes | None, bytes | None]:
        client = aioredis.Redis.from_url(redis_url)
        queue = Queue(client, settings.redis, settings.queue, None)
        real_set = client.set
        repeat: list[bytes | None] = []

        async def set_after_the_repeat(*args: Any, **kwargs: Any) -> Any:
            if not repeat:  # the original's SET: the repeat runs to its end first
                client.set = real_set  # type: ignore[method-assign]
                repeat.append(
                    await queue.enqueue_once(
                        "default", jobs, key="k", answer=b"second", window_ms=60_000
                    )
                )
            return await real_set(*args, **kwargs)

        client.set = set_after_the_repeat  # type: ignore[method-assign]
        try:
            first = await queue.enqueue_once(
                "default", jobs, key="k", answer=b"first", window_ms=60_000
            )
        finally:
            await client.aclose()
        return first, repeat[0]

    assert asyncio.run(interleaved()) == (None, b"first")


def test_concurrent_http_repeats_store_once(api: httpx.Client, redis_client: redis.Redis) -> None:
    """Concurrent identical requests over HTTP: all 200, one op queued."""

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=str(api.base_url), auth=AUTH, timeout=30) as c:
            return await asyncio.gather(
                *(
                    c.put(
                        "/api/v1/customers/9", json={"n": 1}, headers={"Idempotency-Key": "burst"}
                    )
                    for _ in range(20)
                )
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 20
    assert sum("idempotent-replayed" in r.headers for r in responses) == 19
    assert len(queued(redis_client)) == 1


def _big_op(i: int) -> dict[str, Any]:
    # 25 values of 900 bytes: ~23 kB, under the 32,768-byte op limit.
    attributes = {f"a{j}": f"{i}-" + "x" * 897 for j in range(25)}
    return {
        "type": "person",
        "action": "identify",
        "identifiers": {"id": f"big{i}"},
        "attributes": attributes,
    }


def test_batch_over_500_kb_is_accepted_and_repacked(
    make_settings: Callable[..., Settings],
    triggers: RecordingTriggers,
    redis_client: redis.Redis,
    sandbox_url: str,
    client: httpx.Client,
) -> None:
    """A 1.4 MB /api/v2/batch is accepted and leaves in batches of at most 500,000 bytes."""
    settings = make_settings(track_url=sandbox_url, bulk_drain_budget_s=60)
    body = orjson.dumps({"batch": [_big_op(i) for i in range(60)]})
    assert len(body) > 1_300_000
    with serve_in_thread(create_app(settings, triggers=triggers)) as url:
        r = httpx.post(f"{url}/api/v2/batch", content=body, auth=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    drainer = build_drainer(settings, redis_client)
    for shard in range(settings.queue.shards):
        # A backlog drains on the bulk queue's terms (a live drain hands it over).
        assert drainer.drain("default", shard, Lane.TRACK, bulk=True).stopped == "empty"
    records = client.get("/_sandbox/received", params={"limit": 1000}).json()["records"]
    assert sorted(rec["op"]["identifiers"]["id"] for rec in records) == sorted(
        f"big{i}" for i in range(60)
    )
    sizes = [req["body_bytes"] for req in client.get("/_sandbox/requests").json()["records"]]
    assert len(sizes) >= 3 and max(sizes) <= 500_000


def test_batch_over_the_request_cap_is_413(
    make_settings: Callable[..., Settings], triggers: RecordingTriggers, redis_client: redis.Redis
) -> None:
    """Beyond CIOQ_MAX_REQUEST_BYTES (default 5 MB) the answer is 413 with a JSON error."""
    settings = make_settings()
    assert settings.listener.max_request_bytes == 5_000_000
    with serve_in_thread(create_app(settings, triggers=triggers)) as url:
        r = httpx.post(f"{url}/api/v2/batch", content=b" " * 5_000_001, auth=AUTH, timeout=60)
    assert r.status_code == 413
    assert r.json()["errors"][0] == {
        "field": "body",
        "rule": "max_bytes",
        "message": "request body over 5000000 bytes",
        "limit": 5_000_000,
    }
    assert queued(redis_client) == []


def test_key_reused_for_another_request_is_422(
    api: httpx.Client, redis_client: redis.Redis
) -> None:
    """A key names one request: another body or path under it is refused, not replayed."""
    headers = {"Idempotency-Key": "once"}
    assert api.put("/api/v1/customers/1", json={"a": 1}, headers=headers).status_code == 200
    for method, path, body in [
        ("PUT", "/api/v1/customers/1", {"a": 2}),
        ("PUT", "/api/v1/customers/2", {"a": 1}),
        ("POST", "/api/v1/customers/1/events", {"name": "a"}),
    ]:
        r = api.request(method, path, json=body, headers=headers)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["errors"][0]["rule"] == "reused"
    assert len(queued(redis_client)) == 1


def test_key_is_forgotten_after_the_window(
    make_settings: Callable[..., Settings], triggers: RecordingTriggers, redis_client: redis.Redis
) -> None:
    """CIOQ_IDEMPOTENCY_WINDOW_S bounds the memory: past it, the same key queues again."""
    app = create_app(make_settings(idempotency_window_s=0.3), triggers=triggers)
    headers = {"Idempotency-Key": "short"}
    with serve_in_thread(app) as url:
        first = httpx.put(f"{url}/api/v1/customers/1", json={}, headers=headers, auth=AUTH)
        assert 0 < redis_client.pttl(keys.idempotency("default", "short")) <= 300
        wait_until(
            lambda: not redis_client.exists(keys.idempotency("default", "short")),
            timeout_s=10,
            what="the idempotency key to expire",
        )
        again = httpx.put(f"{url}/api/v1/customers/1", json={}, headers=headers, auth=AUTH)
    assert first.status_code == again.status_code == 200
    assert "idempotent-replayed" not in again.headers
    assert len(queued(redis_client)) == 2
