"""The operator console over real HTTP and real Redis: sessions, CSRF, escaping, pause/resume.

What a browser does (scripts, the DOM) is in tests/e2e/console/test_console_browser.py; this file
checks the server's side of every rule with plain HTTP requests.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from pydantic import SecretStr

from service import keys
from service.api.app import create_app
from service.config import Settings
from service.console.session import COOKIE, Sessions
from service.jobs import Lane
from service.lanes.track.jobs import v2_job
from service.store.dead_letters import DeadLetter, DeadLetterStore
from tests.support.http_server import serve_in_thread
from tests.support.streams import stream_entries
from tests.support.triggers import RecordingTriggers

ADMIN_KEY = "ops-secret-key"
INGEST_KEY = "producer-key"
XSS = '<script>window.__xss=1</script>"><img src=x onerror=alert(1)>javascript:alert(1)'


@pytest.fixture
def console(
    make_settings: Callable[..., Settings], triggers: RecordingTriggers
) -> Iterator[tuple[str, Settings]]:
    settings = make_settings(admin_keys=f"alice:{ADMIN_KEY}", ingest_keys=INGEST_KEY)
    with serve_in_thread(create_app(settings, triggers=triggers)) as url:
        yield url, settings


def _client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=10, follow_redirects=False)


def _sign_in(client: httpx.Client, key: str = ADMIN_KEY) -> httpx.Response:
    return client.post("/console/sign-in", data={"key": key})


def _csrf(client: httpx.Client) -> str:
    page = client.get("/console/overview")
    assert page.status_code == 200, page.text
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match
    return match.group(1)


def _hostile_letter() -> DeadLetter:
    op = {
        "type": "person",
        "action": "event",
        "identifiers": {"id": XSS},
        "name": XSS[:90],
        "id": "01JABCDEFGHJKMNPQRSTVWXYZ9",
        "attributes": {"note": XSS},
    }
    return DeadLetter(
        "v2", v2_job(op).payload, "default:0:1-0", "invalid_field", "partial", 207, message=XSS
    )


def test_sign_in_sets_a_signed_httponly_strict_cookie_with_an_expiry(
    console: tuple[str, Settings],
) -> None:
    url, _ = console
    with _client(url) as client:
        response = _sign_in(client)
        assert response.status_code == 303
        assert response.headers["location"] == "/console/overview"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        for attribute in ("HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age=28800"):
            assert attribute in cookie
        page = client.get("/console/overview")
        assert page.status_code == 200
        assert "signed in as <strong>alice</strong>" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "<script>" not in page.text  # the only script is the external file
        signed_out = client.post("/console/sign-out", data={"csrf": _csrf(client)})
        assert signed_out.status_code == 303 and "Max-Age=0" in signed_out.headers["set-cookie"]
        assert client.get("/console/overview").status_code == 303


@pytest.mark.parametrize(
    "key",
    [INGEST_KEY, "not-a-key", f"alice:{ADMIN_KEY}", ""],
    ids=["ingest", "wrong", "entry", "empty"],
)
def test_only_an_admin_key_signs_in(console: tuple[str, Settings], key: str) -> None:
    url, _ = console
    with _client(url) as client:
        response = _sign_in(client, key)
        assert response.status_code == 401
        assert "set-cookie" not in response.headers
        assert client.get("/console/overview").status_code == 303


@pytest.mark.parametrize("scheme", ["Bearer", "Basic"])
def test_an_ingest_key_in_a_header_does_not_open_the_console(
    console: tuple[str, Settings], scheme: str
) -> None:
    url, _ = console
    auth = httpx.BasicAuth("site", INGEST_KEY) if scheme == "Basic" else None
    headers = {"Authorization": f"Bearer {INGEST_KEY}"} if scheme == "Bearer" else {}
    with httpx.Client(base_url=url, auth=auth, headers=headers, follow_redirects=False) as client:
        for path in ("/console/overview", "/console/overview.json", "/console/dead-letters"):
            response = client.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"] == "/console/sign-in"


def _tamper(value: str) -> str:
    payload, _, signature = value.partition(".")
    return f"{payload[:-2]}AA.{signature}"


def test_forged_and_expired_cookies_are_refused(console: tuple[str, Settings]) -> None:
    url, settings = console
    past = Sessions(settings.console, settings.keys, clock=lambda: 1_000_000.0)
    _, expired = past.issue("alice")
    _, good = Sessions(settings.console, settings.keys).issue("alice")
    _, other_secret = Sessions(
        settings.console.model_copy(update={"console_secret": SecretStr("x" * 32)}), settings.keys
    ).issue("alice")
    _, unknown_name = Sessions(settings.console, settings.keys).issue("mallory")
    with _client(url) as client:
        client.cookies.set(COOKIE, good)
        assert client.get("/console/overview").status_code == 200
        for bad in (expired, _tamper(good), other_secret, unknown_name, "garbage", good + "x"):
            client.cookies.set(COOKIE, bad)
            response = client.get("/console/overview")
            assert response.status_code == 303, bad
            assert client.get("/console/overview.json").status_code == 303


def test_a_post_without_a_valid_csrf_token_changes_nothing(
    console: tuple[str, Settings], redis_client: redis.Redis
) -> None:
    url, _ = console
    DeadLetterStore(redis_client).add("default", [_hostile_letter()])
    with _client(url) as client:
        assert _sign_in(client).status_code == 303
        pause = {"workspace": "default", "lane": "track", "reason": "x", "action": "pause"}
        purge = {"workspace": "default", "do": "purge-matching", "confirm": "yes"}
        for form in (pause, purge):
            for token in (None, "", "forged-token"):
                data: dict[str, Any] = dict(form)
                if token is not None:
                    data["csrf"] = token
                target = "/console/lanes" if "action" in form else "/console/dead-letters/action"
                response = client.post(target, data=data)
                assert response.status_code == 403, (target, token)
        assert redis_client.get(keys.pause("default", Lane.TRACK)) is None
        assert redis_client.xlen(keys.dead_letters("default")) == 1
        assert redis_client.xlen(keys.audit()) == 0
        # The same forms with the session's token do act.
        csrf = _csrf(client)
        assert client.post("/console/lanes", data={**pause, "csrf": csrf}).status_code == 303
        assert redis_client.get(keys.pause("default", Lane.TRACK)) == b"manual"
        response = client.post("/console/dead-letters/action", data={**purge, "csrf": csrf})
        assert response.status_code == 200 and 'data-done="1"' in response.text
        assert redis_client.xlen(keys.dead_letters("default")) == 0


def test_producer_values_are_escaped_in_every_page(
    console: tuple[str, Settings], redis_client: redis.Redis
) -> None:
    url, _ = console
    DeadLetterStore(redis_client).add("default", [_hostile_letter()])
    (letter_id,) = [
        i.decode() for i, _ in stream_entries(redis_client, keys.dead_letters("default"))
    ]
    with _client(url) as client:
        _sign_in(client)
        pages = [
            client.get("/console/dead-letters"),
            client.get(f"/console/dead-letters/default/{letter_id}"),
            client.get("/console/dead-letters", params={"person": XSS}),
        ]
        for page in pages:
            assert page.status_code == 200
            assert "<script>window" not in page.text
            assert "<img src=x" not in page.text
            assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in page.text
            assert 'href="javascript' not in page.text.lower()


def test_pause_and_resume_are_audited_with_the_key_name(
    console: tuple[str, Settings], redis_client: redis.Redis, triggers: RecordingTriggers
) -> None:
    url, _ = console
    redis_client.xadd(keys.shard_keys("default", 2, Lane.TRACK).stream, {"v2": b"{}"})
    with _client(url) as client:
        _sign_in(client)
        csrf = _csrf(client)
        form = {"csrf": csrf, "workspace": "default", "lane": "track", "for": "4h"}
        client.post("/console/lanes", data={**form, "action": "pause", "reason": "incident 42"})
        ttl_ms = redis_client.pttl(keys.pause("default", Lane.TRACK))
        assert 4 * 3_600_000 - 60_000 < ttl_ms <= 4 * 3_600_000
        numbers = client.get("/console/overview.json").json()
        (row,) = numbers["rows"]
        assert row["paused"] and row["cells"]["waiting"] == "1"
        assert row["cells"]["state"].startswith("paused by hand by alice: incident 42")
        client.post("/console/lanes", data={**form, "action": "resume", "reason": "over"})
        assert redis_client.get(keys.pause("default", Lane.TRACK)) is None
        assert ("default", 2, 0.0) in triggers.sent
        audit = client.get("/console/audit").text
        assert audit.count("<td><strong>alice</strong></td>") == 2
        assert "for 4h: incident 42" in audit and "lifted manual: over" in audit
        bad = client.post(
            "/console/lanes", data={**form, "action": "pause", "lane": "nope", "reason": "r"}
        )
        assert bad.status_code == 400 and "lanes are track, pipelines" in bad.text


def test_bare_admin_keys_are_named_by_fingerprint(make_settings: Callable[..., Settings]) -> None:
    from service.config import admin_key_entries

    settings = make_settings(admin_keys="plainkey,bob:bobs-key,:odd")
    names = [name for name, _ in admin_key_entries(settings.keys)]
    assert names[0].startswith("key-") and len(names[0]) == 12
    assert names[1] == "bob"
    assert [key for _, key in admin_key_entries(settings.keys)] == ["plainkey", "bobs-key", ":odd"]
