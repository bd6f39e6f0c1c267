"""The ingest API over real HTTP against real Redis: auth, bad input, durable writes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import cast

import httpx
import pytest
import redis

from service.api.app import create_app
from service.config import Settings
from tests.support.http_server import serve_in_thread
from tests.support.ingest import AUTH, queued
from tests.support.triggers import RecordingTriggers


@pytest.fixture
def api(
    make_settings: Callable[..., Settings], triggers: RecordingTriggers
) -> Iterator[httpx.Client]:
    app = create_app(make_settings(linger_ms=250), triggers=triggers)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, auth=AUTH, timeout=10) as c:
        yield c


def test_identify_is_stored_as_one_v2_op(api: httpx.Client, redis_client: redis.Redis) -> None:
    """PUT /api/v1/customers/{id} answers 200 {} once one identify op is in Redis."""
    r = api.put("/api/v1/customers/42", json={"first_name": "Jane", "_timestamp": 1700000000})
    assert (r.status_code, r.json()) == (200, {})
    [op] = queued(redis_client)
    assert op["action"] == "identify" and op["identifiers"] == {"id": "42"}
    assert op["attributes"]["first_name"] == "Jane"
    assert op["timestamp"] == 1700000000


def test_event_gets_a_ulid_and_trigger_is_debounced(
    api: httpx.Client, redis_client: redis.Redis, triggers: RecordingTriggers
) -> None:
    """Events get an id; a burst to one shard sends one trigger, delayed by the linger."""
    for _ in range(5):
        assert api.post("/api/v1/customers/7/events", json={"name": "x"}).status_code == 200
    ops = queued(redis_client)
    assert len(ops) == 5 and len({op["id"] for op in ops}) == 5
    assert all(len(op["id"]) == 26 for op in ops)
    assert triggers.sent == [("default", triggers.sent[0][1], 0.25)]


def test_percent_encoded_slash_stays_in_the_id(
    api: httpx.Client, redis_client: redis.Redis
) -> None:
    """The SDK quotes '/' as %2F; the id keeps it instead of becoming a new path segment."""
    assert api.delete("/api/v1/customers/a%2Fb").status_code == 200
    [op] = queued(redis_client)
    assert op["identifiers"] == {"id": "a/b"}


def test_v2_batch_is_all_or_nothing(api: httpx.Client, redis_client: redis.Redis) -> None:
    """One bad op refuses the whole batch with its index in the field; nothing is queued."""
    good = {"type": "person", "action": "identify", "identifiers": {"id": "1"}}
    bad = {"type": "person", "action": "identify", "identifiers": {"id": "1", "email": "a@b"}}
    r = api.post("/api/v2/batch", json={"batch": [good, bad]})
    assert r.status_code == 400
    assert any(e["field"].startswith("batch[1].identifiers") for e in r.json()["errors"])
    assert queued(redis_client) == []
    assert api.post("/api/v2/batch", json={"batch": [good, good]}).status_code == 200
    assert len(queued(redis_client)) == 2


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/api/v2/batch", b"{not json", "body"),
        ("POST", "/api/v2/batch", b'{"batch": {}}', "batch"),
        ("POST", "/api/v2/batch", b'{"batch": "x"}', "batch"),
        (
            "POST",
            "/api/v2/entity",
            b'{"type":"person","action":"fly","identifiers":{"id":"1"}}',
            "action",
        ),
        (
            "POST",
            "/api/v2/entity",
            b'{"type":"person","action":"identify","identifiers":{}}',
            "identifiers",
        ),
        (
            "POST",
            "/api/v2/entity",
            b'{"type":"person","action":"identify","identifiers":{"id":5}}',
            "identifiers.id",
        ),
        ("POST", "/api/v1/customers/1/events", b'{"data": {}}', "name"),
        ("POST", "/api/v1/customers/1/events", b'{"name": "x", "data": ""}', "data"),
        ("PUT", "/api/v1/customers/1", b'["not", "an", "object"]', "body"),
        ("PUT", "/api/v1/customers/1/devices", b'{"device": {"platform": "ios"}}', "device.id"),
    ],
)
def test_bad_input_names_the_field_and_queues_nothing(
    api: httpx.Client, redis_client: redis.Redis, method: str, path: str, body: bytes, field: str
) -> None:
    """Malformed JSON, wrong identifiers, unknown actions and wrong types → 400 naming the field."""
    r = api.request(method, path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    errors = r.json()["errors"]
    assert any(e["field"] == field for e in errors), errors
    assert all({"field", "rule", "message"} <= e.keys() for e in errors)
    assert queued(redis_client) == []


@pytest.mark.parametrize(
    "auth",
    [None, ("site", "wrong-key"), "Bearer wrong", "Bearer", "Basic !!notbase64", "Digest x"],
    ids=["none", "basic-wrong", "bearer-wrong", "bearer-empty", "basic-garbled", "other-scheme"],
)
def test_missing_or_wrong_key_is_401(
    api: httpx.Client, redis_client: redis.Redis, auth: object
) -> None:
    """Anything but a configured ingest key is refused with 401 and a JSON error."""
    headers = {"authorization": auth} if isinstance(auth, str) else {}
    with httpx.Client(base_url=str(api.base_url), timeout=10) as anon:
        r = anon.put(
            "/api/v1/customers/1",
            json={},
            headers=headers,
            auth=cast(tuple[str, str], auth)
            if isinstance(auth, tuple)
            else httpx.USE_CLIENT_DEFAULT,
        )
    assert r.status_code == 401
    assert r.json()["errors"][0]["field"] == "authorization"
    assert queued(redis_client) == []


def test_bearer_key_is_accepted(api: httpx.Client) -> None:
    """Authorization: Bearer <ingest key> works like Basic."""
    with httpx.Client(base_url=str(api.base_url), timeout=10) as c:
        r = c.post(
            "/api/v1/customers/1/suppress", headers={"authorization": "Bearer dev-ingest-key"}
        )
    assert r.status_code == 200


def test_unknown_route_and_method(api: httpx.Client) -> None:
    """404 for unknown paths, 405 for a known path with the wrong method, both JSON."""
    assert api.get("/nope").status_code == 404
    r = api.get("/api/v1/customers/1")
    assert r.status_code == 405 and r.json()["errors"][0]["rule"] == "method"


def test_oversized_body_is_413(
    make_settings: Callable[..., Settings], triggers: RecordingTriggers
) -> None:
    """Bodies over CIOQ_MAX_REQUEST_BYTES are refused before parsing; keys come first."""
    app = create_app(make_settings(max_request_bytes=1000), triggers=triggers)
    with serve_in_thread(app) as url:
        r = httpx.post(f"{url}/api/v2/batch", content=b"x" * 1001, auth=AUTH)
        stranger = httpx.post(f"{url}/api/v2/batch", content=b"x" * 1001)
    assert r.status_code == 413 and r.json()["errors"][0]["limit"] == 1000
    assert stranger.status_code == 401


def test_health_and_readiness(
    api: httpx.Client, make_settings: Callable[..., Settings], triggers: RecordingTriggers
) -> None:
    """healthz and readyz answer from the process alone; ingest answers 503 without Redis."""
    assert api.get("/healthz").status_code == 200
    assert api.get("/readyz").status_code == 200
    app = create_app(
        make_settings(redis_url="redis://127.0.0.1:1/0", redis_timeout_s=0.5), triggers=triggers
    )
    with serve_in_thread(app) as url:
        # A shared-backend blip must not take every api pod out of the Service.
        assert httpx.get(f"{url}/readyz").status_code == 200
        r = httpx.put(f"{url}/api/v1/customers/1", json={}, auth=AUTH)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
