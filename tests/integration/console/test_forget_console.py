"""The console's forget page and a console replay that meets a tombstone, over real HTTP and
real Redis."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from service.api.app import create_app
from service.config import Settings
from service.store.dead_letters import DeadLetter, DeadLetterStore
from tests.support.forget import email, person_id, stream_people, traces, track_job
from tests.support.http_server import serve_in_thread
from tests.support.triggers import RecordingTriggers

ADMIN_KEY = "ops-secret-key"
GONE, OTHER = person_id(3), person_id(4)


@pytest.fixture
def console(make_settings: Callable[..., Settings]) -> Iterator[httpx.Client]:
    settings = make_settings(admin_keys=f"alice:{ADMIN_KEY}")
    with (
        serve_in_thread(create_app(settings, triggers=RecordingTriggers())) as url,
        httpx.Client(base_url=url, timeout=10, follow_redirects=False) as client,
    ):
        assert client.post("/console/sign-in", data={"key": ADMIN_KEY}).status_code == 303
        yield client


def _csrf(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match
    return match.group(1)


def _letter(person: str, seq: int) -> DeadLetter:
    return DeadLetter("v2", track_job(person, seq).payload, "default:0:1-0", "invalid", "x", 400)


def test_the_console_forgets_a_person_after_the_box_is_ticked(
    console: httpx.Client, redis_client: redis.Redis
) -> None:
    DeadLetterStore(redis_client).add("default", [_letter(GONE, 1), _letter(OTHER, 1)])
    form = {
        "csrf": _csrf(console, "/console/forget"),
        "workspace": "default",
        "person": f"{GONE}\nemail:{email(GONE)}\n",
    }
    # Without the "cannot be undone" box: refused, nothing removed
    refused = console.post("/console/forget", data=form)
    assert refused.status_code == 400 and "irreversible" in refused.text
    assert traces(redis_client, [GONE])
    # With it: forgotten, the page and the audit name a digest only
    done = console.post("/console/forget", data={**form, "irreversible": "yes"})
    assert done.status_code == 200, done.text
    assert 'data-name="dead_letters" data-count="1"' in done.text
    assert 'id="upstream"' not in done.text  # no delete to Customer.io unless asked
    assert GONE not in done.text and email(GONE) not in done.text
    assert traces(redis_client, [GONE, email(GONE)]) == {}
    audit = console.get("/console/audit").text
    digest = re.search(r'data-person="(sha256:[0-9a-f]+)"', done.text)
    assert digest and digest.group(1) in audit and GONE not in audit


def test_a_console_replay_drops_a_forgotten_persons_letters(
    console: httpx.Client, redis_client: redis.Redis
) -> None:
    form = {"csrf": _csrf(console, "/console/forget"), "workspace": "default"}
    forgot = console.post("/console/forget", data={**form, "person": GONE, "irreversible": "yes"})
    assert forgot.status_code == 200
    DeadLetterStore(redis_client).add("default", [_letter(GONE, 2), _letter(OTHER, 2)])
    action = {**form, "do": "replay-matching", "confirm": "yes"}
    done = console.post("/console/dead-letters/action", data=action)
    assert done.status_code == 200, done.text
    assert 'data-done="1"' in done.text and 'data-dropped="1"' in done.text
    assert stream_people(redis_client, "default", 4) == {OTHER: [2]}


def test_the_console_can_queue_the_delete_to_customerio(
    console: httpx.Client, redis_client: redis.Redis
) -> None:
    form = {
        "csrf": _csrf(console, "/console/forget"),
        "workspace": "default",
        "person": GONE,
        "irreversible": "yes",
        "delete_upstream": "yes",
    }
    done = console.post("/console/forget", data=form)
    assert done.status_code == 200, done.text
    assert 'id="upstream" data-count="1"' in done.text
    assert [k for k in traces(redis_client, [GONE]) if k.startswith("cioq:q:")]
