"""The console's repair form over real HTTP and Redis: the payload and Customer.io's error,
a refused fix kept on the form with the rule named, a saved fix replayed and audited."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis

from service import keys
from service.api.app import create_app
from service.config import Settings
from service.jobs import Lane
from service.lanes.app.jobs import app_job
from service.lanes.track.jobs import FIELD_OP, v2_job
from service.store.dead_letters import DeadLetter, DeadLetterStore
from tests.support.http_server import serve_in_thread
from tests.support.streams import stream_entries, stream_fields
from tests.support.triggers import RecordingTriggers

ADMIN_KEY = "ops-secret-key"
OP = {
    "type": "person",
    "action": "identify",
    "identifiers": {"id": "p1"},
    "attributes": {"plan": "pro", "sandbox_poison": "400"},
}


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[httpx.Client]:
    settings = make_settings(admin_keys=f"alice:{ADMIN_KEY}")
    with (
        serve_in_thread(create_app(settings, triggers=RecordingTriggers())) as url,
        httpx.Client(base_url=url, timeout=10, follow_redirects=False) as client,
    ):
        assert client.post("/console/sign-in", data={"key": ADMIN_KEY}).status_code == 303
        yield client


def _add(client: redis.Redis, letter: DeadLetter) -> str:
    DeadLetterStore(client).add("default", [letter])
    return stream_entries(client, keys.dead_letters("default"))[-1][0].decode()


def _letter(payload: bytes, kind: str = "v2") -> DeadLetter:
    return DeadLetter(
        kind, payload, "default:0:1-0", "invalid", "invalid", 400, message="bad plan field"
    )


def _csrf(page: httpx.Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match
    return match.group(1)


def _textarea(page: httpx.Response) -> Any:
    match = re.search(r'<textarea name="payload"[^>]*>(.*?)</textarea>', page.text, re.S)
    assert match
    return orjson.loads(html.unescape(match.group(1)))


def _queued(client: redis.Redis) -> list[Any]:
    return [
        orjson.loads(fields[FIELD_OP])
        for shard in range(4)
        for fields in stream_fields(client, keys.shard_keys("default", shard, Lane.TRACK).stream)
    ]


def test_the_form_shows_the_payload_and_the_error_and_a_fix_is_replayed(
    client: httpx.Client, redis_client: redis.Redis, make_settings: Callable[..., Settings]
) -> None:
    letter_id = _add(redis_client, _letter(v2_job(OP).payload))
    path = f"/console/dead-letters/default/{letter_id}/edit"
    form = client.get(path)
    assert form.status_code == 200
    assert _textarea(form) == OP
    assert "bad plan field" in form.text  # Customer.io's message beside the payload

    still_bad = {**OP, "identifiers": {"id": ""}}
    refused = client.post(
        path, data={"csrf": _csrf(form), "payload": orjson.dumps(still_bad).decode()}
    )
    assert refused.status_code == 422
    assert 'data-field="identifiers.id"' in refused.text
    assert _textarea(refused) == still_bad  # the operator's text is kept
    not_json = client.post(path, data={"csrf": _csrf(form), "payload": "{"})
    assert not_json.status_code == 400 and 'data-field="payload"' in not_json.text
    assert redis_client.xlen(keys.dead_letters("default")) == 1

    fix = {**OP, "attributes": {"plan": "pro"}}
    saved = client.post(path, data={"csrf": _csrf(form), "payload": orjson.dumps(fix).decode()})
    assert saved.status_code == 200, saved.text
    assert "-attributes.sandbox_poison" in html.unescape(saved.text)
    assert _queued(redis_client) == [fix]
    assert redis_client.xlen(keys.dead_letters("default")) == 0
    audit = client.get("/console/audit").text
    assert "repair" in audit and letter_id in audit


def test_an_app_send_needs_the_may_deliver_twice_box(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    body = {"identifiers": {"id": "p9"}, "transactional_message_id": 3, "to": "+15555550100"}
    send = app_job("j-1", "/v1/send/sms", body, limit="send", route="send:j-1", op_type="send_sms")
    letter_id = _add(redis_client, _letter(send.payload, kind="app"))
    path = f"/console/dead-letters/default/{letter_id}/edit"
    form = client.get(path)
    assert 'id="may-deliver-twice"' in form.text
    data = {"csrf": _csrf(form), "payload": send.payload.decode()}
    refused = client.post(path, data=data)
    assert refused.status_code == 409 and 'data-field="may_deliver_twice"' in refused.text
    confirmed = client.post(path, data={**data, "may_deliver_twice": "yes"})
    assert confirmed.status_code == 200
    assert redis_client.xlen(keys.dead_letters("default")) == 0


def test_a_post_without_the_csrf_token_repairs_nothing(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    letter_id = _add(redis_client, _letter(v2_job(OP).payload))
    path = f"/console/dead-letters/default/{letter_id}/edit"
    fix = {**OP, "attributes": {"plan": "pro"}}
    refused = client.post(path, data={"payload": orjson.dumps(fix).decode()})
    assert refused.status_code == 403
    assert redis_client.xlen(keys.dead_letters("default")) == 1
