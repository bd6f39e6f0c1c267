"""Pipelines ingest over real HTTP against real Redis: auth, stamping, every bad-input rule."""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest
import redis

from service import keys
from service.api.app import create_app
from service.config import Settings
from service.jobs import Lane
from tests.support.http_server import serve_in_thread
from tests.support.streams import stream_fields
from tests.support.triggers import RecordingTriggers

INGEST_KEY = "dev-ingest-key"
#: What the Pipelines SDKs send: Basic with the key as username and a blank password.
BASIC = httpx.BasicAuth(INGEST_KEY, "")


@pytest.fixture
def api(
    make_settings: Callable[..., Settings], triggers: RecordingTriggers
) -> Iterator[httpx.Client]:
    app = create_app(make_settings(cdp_api_key="cdp-key"), triggers=triggers)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, auth=BASIC, timeout=10) as c:
        yield c


def queued(client: redis.Redis, lane: Lane = Lane.PIPELINES, shards: int = 4) -> list[Any]:
    out = []
    for shard in range(shards):
        for fields in stream_fields(client, keys.shard_keys("default", shard, lane).stream):
            out.append(orjson.loads(next(iter(fields.values()))))
    return out


def nothing_queued(client: redis.Redis) -> bool:
    return queued(client, Lane.PIPELINES) == [] and queued(client, Lane.TRACK) == []


def test_calls_are_stamped_and_stored_in_the_pipelines_lane(
    api: httpx.Client, redis_client: redis.Redis, triggers: RecordingTriggers
) -> None:
    """messageId and timestamp are added where missing, kept where sent; type from the path."""
    before = time.time()
    assert api.post("/v1/track", json={"userId": "u1", "event": "e"}).status_code == 200
    own = {"userId": "u1", "messageId": "m-1", "timestamp": "2026-01-01T00:00:00Z"}
    assert api.post("/v1/identify", json=own).status_code == 200
    first, second = queued(redis_client)
    assert first["type"] == "track" and len(first["messageId"]) == 26
    stamped = datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00")).timestamp()
    assert before - 0.01 <= stamped <= time.time() + 0.01
    assert second == {**own, "type": "identify"}
    assert queued(redis_client, Lane.TRACK) == []
    assert triggers.lanes == [Lane.PIPELINES]


def test_bearer_and_gzip_and_batch_context(api: httpx.Client, redis_client: redis.Redis) -> None:
    """Bearer works too; a gzip body is inflated; batch-level context reaches every call."""
    body = {
        "batch": [
            {"type": "page", "anonymousId": "a1", "context": {"ip": "1.2.3.4"}},
            {"type": "screen", "userId": "u2"},
        ],
        "context": {"ip": "9.9.9.9", "locale": "fr"},
    }
    r = httpx.post(
        f"{api.base_url}/v1/batch",
        content=gzip.compress(orjson.dumps(body)),
        headers={"Authorization": f"Bearer {INGEST_KEY}", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200, r.text
    calls = sorted(queued(redis_client), key=lambda c: c["type"])
    assert calls[0]["context"] == {"ip": "1.2.3.4", "locale": "fr"}
    assert calls[1]["context"] == {"ip": "9.9.9.9", "locale": "fr"}


def test_timestamps_stamped_on_track_ops_and_off_switch(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """Track identify/event get Unix seconds; CIOQ_STAMP_TIMESTAMPS=false stamps nothing."""
    for stamp in (True, False):
        redis_client.flushdb()
        app = create_app(make_settings(cdp_api_key="k", stamp_timestamps=stamp), triggers=None)
        with serve_in_thread(app) as url:
            auth = ("site", INGEST_KEY)
            httpx.put(f"{url}/api/v1/customers/9", json={"a": 1}, auth=auth).raise_for_status()
            httpx.post(f"{url}/v1/track", json={"userId": "9", "event": "x"}, auth=BASIC)
        [op] = queued(redis_client, Lane.TRACK)
        [call] = queued(redis_client, Lane.PIPELINES)
        assert ("timestamp" in op, "timestamp" in call) == (stamp, stamp)
        if stamp:
            assert abs(op["timestamp"] - time.time()) < 5 and isinstance(op["timestamp"], int)
        assert call["messageId"]  # ids are stamped regardless


BIG = "x" * 32_000

# (path, body, field named by the 400)
BAD_INPUT: list[tuple[str, Any, str]] = [
    ("/v1/identify", {"traits": {"a": 1}}, "userId"),
    ("/v1/identify", {"userId": True}, "userId"),
    ("/v1/identify", {"userId": "u", "traits": []}, "traits"),
    ("/v1/identify", {"userId": "u", "type": "track"}, "type"),
    ("/v1/identify", [1, 2], "body"),
    ("/v1/track", {"userId": "u"}, "event"),
    ("/v1/track", {"userId": "u", "event": ""}, "event"),
    ("/v1/track", {"event": "e"}, "userId"),
    ("/v1/track", {"userId": "u", "event": "e", "properties": "p"}, "properties"),
    ("/v1/track", {"userId": "u", "event": "e", "timestamp": 1700000000}, "timestamp"),
    ("/v1/track", {"userId": "u", "event": "e", "timestamp": "yesterday"}, "timestamp"),
    ("/v1/track", {"userId": "u", "event": "e", "messageId": 5}, "messageId"),
    ("/v1/track", {"userId": "u", "event": "e", "context": "c"}, "context"),
    ("/v1/track", {"userId": "u", "event": "Device Created or Updated"}, "context.device.token"),
    (
        "/v1/track",
        {"userId": "u", "event": "Device Deleted", "context": {}},
        "context.device.token",
    ),
    ("/v1/track", {"anonymousId": "a", "event": "User Deleted"}, "userId"),
    ("/v1/track", {"anonymousId": "a", "event": "User Suppressed"}, "userId"),
    ("/v1/track", {"anonymousId": "a", "event": "User Unsuppressed"}, "userId"),
    ("/v1/track", {"userId": "u", "event": "Relationship Deleted"}, "properties.objectId"),
    (
        "/v1/track",
        {"userId": "u", "event": "Object Deleted", "properties": {"objectId": "1"}},
        "anonymousId",
    ),
    ("/v1/track", {"event": "Report Delivery Event"}, "properties.deliveryId"),
    (
        "/v1/track",
        {"event": "Report Delivery Event", "properties": {"deliveryId": "d", "metric": "read"}},
        "properties.metric",
    ),
    ("/v1/page", {"name": "home"}, "userId"),
    ("/v1/screen", {"name": "home"}, "userId"),
    ("/v1/group", {"userId": "u"}, "groupId"),
    ("/v1/group", {"groupId": "g"}, "userId"),
    ("/v1/alias", {"userId": "u"}, "previousId"),
    ("/v1/alias", {"previousId": "p"}, "userId"),
    ("/v1/track", {"userId": "u", "event": "e", "properties": {"s": BIG}}, "body"),
    ("/v1/batch", {"batch": [{"userId": "u", "event": "e"}]}, "batch[0].type"),
    ("/v1/batch", {"batch": [{"type": "nope", "userId": "u"}]}, "batch[0].type"),
    (
        "/v1/batch",
        {"batch": [{"type": "identify", "userId": "u"}, {"type": "track", "userId": "u"}]},
        "batch[1].event",
    ),
    (
        "/v1/batch",
        {"batch": [{"type": "track", "userId": "u", "event": "e", "properties": {"s": BIG}}]},
        "batch[0]",
    ),
    ("/v1/batch", {"batch": [{"type": "identify", "userId": "u"}], "context": 3}, "context"),
]


#: cioq's opt-in rules: refused only with strict_validation (docs/validation-rules.md).
STRICT_BAD_INPUT: list[tuple[str, Any, str]] = [
    ("/v1/identify", {"userId": ""}, "userId"),
    ("/v1/batch", {}, "batch"),
    ("/v1/batch", {"batch": []}, "batch"),
]


@pytest.fixture
def strict_api(
    make_settings: Callable[..., Settings], triggers: RecordingTriggers
) -> Iterator[httpx.Client]:
    settings = make_settings(cdp_api_key="cdp-key", strict_validation=True)
    with (
        serve_in_thread(create_app(settings, triggers=triggers)) as url,
        httpx.Client(base_url=url, auth=BASIC, timeout=10) as c,
    ):
        yield c


@pytest.mark.parametrize(("path", "body", "field"), STRICT_BAD_INPUT)
def test_opt_in_rules_refuse_only_when_strict(
    api: httpx.Client,
    strict_api: httpx.Client,
    redis_client: redis.Redis,
    path: str,
    body: Any,
    field: str,
) -> None:
    """Strict: 400 naming the field, nothing queued. Drop-in: 200, as Customer.io answers."""
    r = strict_api.post(path, json=body)
    assert r.status_code == 400, r.text
    assert field in [e["field"] for e in r.json()["errors"]]
    assert nothing_queued(redis_client)
    assert api.post(path, json=body).status_code == 200


@pytest.mark.parametrize(("path", "body", "field"), BAD_INPUT)
def test_bad_input_is_refused_naming_the_field(
    api: httpx.Client, redis_client: redis.Redis, path: str, body: Any, field: str
) -> None:
    """Each rule: 400, the field named, nothing of the request queued in either lane."""
    r = api.post(path, json=body)
    assert r.status_code == 400, r.text
    fields = [e["field"] for e in r.json()["errors"]]
    assert field in fields, fields
    assert all(e["rule"] and e["message"] for e in r.json()["errors"])
    assert nothing_queued(redis_client)


def test_batch_names_every_bad_call(api: httpx.Client, redis_client: redis.Redis) -> None:
    """One 400 lists every bad call of a batch, not just the first."""
    batch = [{"type": "track", "userId": "u"}, {"type": "identify"}, {"type": "group"}]
    r = api.post("/v1/batch", json={"batch": batch})
    fields = {e["field"] for e in r.json()["errors"]}
    assert {"batch[0].event", "batch[1].userId", "batch[2].groupId"} <= fields
    assert nothing_queued(redis_client)


# gzip output holds the time: fixed mtime keeps test ids equal across xdist workers.
BAD_BODIES = {
    "not gzip": ({"Content-Encoding": "gzip"}, b"not gzip", 400, "body"),
    "truncated gzip": (
        {"Content-Encoding": "gzip"},
        gzip.compress(b"{", mtime=0)[:-4],
        400,
        "body",
    ),
    "unknown encoding": ({"Content-Encoding": "br"}, b"{}", 415, "content-encoding"),
    "gzip bomb": (
        {"Content-Encoding": "gzip"},
        gzip.compress(b" " * 6_000_000, mtime=0),
        413,
        "body",
    ),
    "broken json": ({}, b"{not json", 400, "body"),
}


@pytest.mark.parametrize(
    ("headers", "content", "status", "field"), BAD_BODIES.values(), ids=BAD_BODIES.keys()
)
def test_bad_bodies(
    api: httpx.Client,
    redis_client: redis.Redis,
    headers: dict[str, str],
    content: bytes,
    status: int,
    field: str,
) -> None:
    """Broken gzip, unknown encodings, bombs past the body cap and broken JSON are refused."""
    r = api.post("/v1/identify", content=content, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["errors"][0]["field"] == field
    assert nothing_queued(redis_client)


def test_workspace_without_pipelines_key_refuses(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """No write key: a clear 403 naming the missing setting; nothing is accepted."""
    with serve_in_thread(create_app(make_settings(), triggers=None)) as url:
        r = httpx.post(f"{url}/v1/identify", json={"userId": "u"}, auth=BASIC)
    assert r.status_code == 403
    assert r.json()["errors"][0]["rule"] == "lane_disabled"
    assert "CIOQ_CDP_API_KEY" in r.json()["errors"][0]["message"]
    assert nothing_queued(redis_client)


@pytest.mark.parametrize(
    "auth",
    [None, httpx.BasicAuth("wrong", ""), httpx.BasicAuth("", ""), httpx.BasicAuth("x", "wrong")],
)
def test_unauthenticated_is_401(
    api: httpx.Client, redis_client: redis.Redis, auth: httpx.BasicAuth | None
) -> None:
    r = httpx.post(f"{api.base_url}/v1/identify", json={"userId": "u"}, auth=auth)
    assert r.status_code == 401
    assert nothing_queued(redis_client)
