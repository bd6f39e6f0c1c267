"""Never sent twice, operations: the audit of 00f4e48 (F11, F12, F13, F14, lease check).

Replaying App letters asks "may deliver twice" on every surface (CLI, console, admin API)
and a replayed letter is queued once; a non-ASCII console cookie is refused cleanly; a
non-finite Retry-After is no wait; a retried broadcast trigger names its stored job; a
lease shorter than one send step is refused at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest
import redis
from pydantic import ValidationError

from service import keys
from service.api.app import create_app
from service.config import Settings
from service.delivery.outcomes import MAX_RETRY_AFTER_S, parse_retry_after
from service.lanes.app.jobs import FIELD_APP, app_job
from service.store.dead_letters import DeadLetter, DeadLetterStore
from tests.support.http_server import serve_in_thread
from tests.support.streams import stream_fields
from tests.support.triggers import RecordingTriggers

ADMIN_KEY = "s3cret-admin-key-123"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
INGEST = {"Authorization": "Bearer dev-ingest-key"}
EMAIL = {"transactional_message_id": 7, "to": "a@example.com", "identifiers": {"id": "p1"}}
BASE = "/admin/v1/workspaces/default/dead-letters"


@pytest.fixture
def url(make_settings: Callable[..., Settings]) -> Iterator[str]:
    s = make_settings(admin_keys=f"alice:{ADMIN_KEY}", app_api_key="k", app_send_wait_ms=0)
    with serve_in_thread(create_app(s, triggers=RecordingTriggers())) as found:
        yield found


def _app_letter(redis_client: redis.Redis) -> None:
    job = app_job("s1", "/v1/send/email", EMAIL, limit="send", route="send:s1", op_type="email")
    letter = DeadLetter("app", job.payload, "default:0:1-0", "ambiguous", "ambiguous")
    DeadLetterStore(redis_client).add("default", [letter])


def _queued_sends(redis_client: redis.Redis) -> list[str]:
    found = []
    for key in redis_client.scan_iter(match="cioq:q:*"):
        for fields in stream_fields(redis_client, key):
            if FIELD_APP in fields:
                found.append(orjson.loads(fields[FIELD_APP])["id"])
    return found


def test_admin_api_replays_app_letters_only_with_may_deliver_twice(
    url: str, redis_client: redis.Redis
) -> None:
    """F11: the admin API replayed App letters without the CLI's confirmation."""
    _app_letter(redis_client)
    with httpx.Client(base_url=url, headers=ADMIN, timeout=10) as admin:
        refused = admin.post(f"{BASE}/replay", json={"class": "ambiguous"})
        assert refused.status_code == 409
        assert refused.json()["errors"][0]["field"] == "may_deliver_twice"
        assert _queued_sends(redis_client) == []
        assert (
            admin.post(f"{BASE}/replay", json={"class": "ambiguous", "dry_run": True}).json()[
                "matched"
            ]
            == 1
        )
        body = {"class": "ambiguous", "may_deliver_twice": True}
        assert admin.post(f"{BASE}/replay", json=body).json()["replayed"] == 1
        again = admin.post(f"{BASE}/replay", json=body)  # the letter is gone: nothing more
        assert again.json()["replayed"] == 0
    assert _queued_sends(redis_client) == ["s1"]
    assert redis_client.xlen(keys.dead_letters("default")) == 0


def _console(url: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=url, timeout=10, follow_redirects=False)
    client.post("/console/sign-in", data={"key": ADMIN_KEY})
    page = client.get("/console/overview")
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match
    return client, match.group(1)


def test_console_replays_app_letters_only_with_may_deliver_twice(
    url: str, redis_client: redis.Redis
) -> None:
    """F11: the console replayed App letters with "queued again unchanged" and no warning."""
    _app_letter(redis_client)
    client, csrf = _console(url)
    try:
        form = {"csrf": csrf, "workspace": "default", "do": "replay-matching", "class": "ambiguous"}
        confirm = client.post("/console/dead-letters/action", data=form)
        assert confirm.status_code == 200
        assert 'data-sends="1"' in confirm.text and 'name="may_deliver_twice"' in confirm.text
        refused = client.post("/console/dead-letters/action", data={**form, "confirm": "yes"})
        assert refused.status_code == 409
        assert _queued_sends(redis_client) == []
        done = client.post(
            "/console/dead-letters/action",
            data={**form, "confirm": "yes", "may_deliver_twice": "yes"},
        )
        assert done.status_code == 200 and 'data-done="1"' in done.text
    finally:
        client.close()
    assert _queued_sends(redis_client) == ["s1"]


@pytest.mark.parametrize(
    "cookie", [b"cioq_console=YQ.\xe9", b"cioq_console=\xff\xfe.\xe9\xe9"], ids=["tail", "both"]
)
def test_console_non_ascii_cookie_is_a_clean_sign_in_redirect(url: str, cookie: bytes) -> None:
    """F12: a non-ASCII session cookie was an unhandled 500 (compare_digest on str)."""
    r = httpx.get(f"{url}/console/overview", headers={b"cookie": cookie})
    assert r.status_code == 303
    assert r.headers["location"].endswith("/console/sign-in")
    assert "content-security-policy" in r.headers


def test_console_non_ascii_csrf_is_refused_403(url: str, redis_client: redis.Redis) -> None:
    client, _ = _console(url)
    try:
        form = {"csrf": "\xe9t\xe9", "workspace": "default", "do": "purge-matching", "all": "1"}
        assert client.post("/console/dead-letters/action", data=form).status_code == 403
    finally:
        client.close()


@pytest.mark.parametrize(
    ("header", "expected"),
    [("nan", None), ("inf", None), ("-inf", None), ("1e400", None), ("1e9", MAX_RETRY_AFTER_S)],
)
def test_a_non_finite_retry_after_is_no_wait(header: str, expected: float | None) -> None:
    """F13: parse_retry_after("nan") was nan, and int(nan * 1000) killed the drain."""
    assert parse_retry_after(header) == expected


def test_a_retried_broadcast_trigger_names_the_stored_job(
    url: str, redis_client: redis.Redis
) -> None:
    """F14: a trigger retried after its answer was lost was answered with a job id that
    was never stored (its status stayed queued for a job that did not exist)."""
    h = {**INGEST, "Idempotency-Key": "campaign-9-run-1"}
    with httpx.Client(base_url=url, headers=h, timeout=10) as api:
        first = api.post("/v1/campaigns/9/triggers", json={"data": {"x": 1}})
        assert first.status_code == 202
        redis_client.delete(keys.idempotency("default", "campaign-9-run-1"))  # the lost SET
        again = api.post("/v1/campaigns/9/triggers", json={"data": {"x": 1}})
    assert again.status_code == 202
    assert again.json()["job_id"] == first.json()["job_id"]
    assert _queued_sends(redis_client) == [first.json()["job_id"]]


def test_a_lease_shorter_than_one_send_step_is_refused(
    make_settings: Callable[..., Settings],
) -> None:
    """A lease that one send step can outlast makes lease loss routine: refused."""
    with pytest.raises(ValidationError, match="CIOQ_LEASE_MS"):
        make_settings(lease_ms=10_000)
    s = make_settings(lease_ms=10_000, upstream_timeout_s=2)  # a step is 1 + 2 + 2 s
    assert s.drain.lease_ms >= s.min_lease_ms
    assert make_settings(lease_ms=3000, allow_short_lease=True).drain.lease_ms == 3000
