"""The sandbox's late failures: calls accepted with 200 that fail afterwards, in the
activity log the App API serves (``GET /v1/activities``, ``/v1/customers/{id}/activities``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox import SandboxConfig, create_sandbox_app
from sandbox.activities import (
    ATTRIBUTE_REFUSED,
    EMAIL_TAKEN,
    EVENT_FAILED,
    Activities,
    LateFailureConfig,
)
from tests.support.http_server import serve_in_thread
from tests.support.processes import wait_until

APP_KEY = "dev-app-key"
ALWAYS = LateFailureConfig(rate=1.0, min_delay_s=0.0, max_delay_s=0.0)
EVENT_ID = "01JABCDEFGHJKMNPQRSTVWXYZ0"


def _v2(action: str, ident: dict[str, str], **rest: Any) -> dict[str, Any]:
    return {"type": "person", "action": action, "identifiers": ident, **rest}


@pytest.mark.parametrize(
    ("kind", "op", "expected"),
    [
        (
            "v2",
            _v2("identify", {"id": "p1"}, attributes={"email": "taken@example.com"}),
            ("failed_attribute_change", "email", EMAIL_TAKEN),
        ),
        (
            "v2",
            _v2("identify", {"id": "p1"}, attributes={"plan": "pro"}),
            ("failed_attribute_change", "plan", ATTRIBUTE_REFUSED),
        ),
        (
            "v2",
            _v2("event", {"email": "a@example.com"}, name="bought", id=EVENT_ID),
            ("failed_event", "bought", EVENT_FAILED),
        ),
        (
            "v1",
            {"method": "PUT", "path": "/api/v1/customers/p1", "body": {"email": "x@example.com"}},
            ("failed_attribute_change", "email", EMAIL_TAKEN),
        ),
        (
            "v1",
            {"method": "POST", "path": "/api/v1/customers/p1/events", "body": {"name": "e"}},
            ("failed_event", "e", EVENT_FAILED),
        ),
        (
            "cdp",
            {"type": "identify", "userId": "p1", "traits": {"email": "x@example.com"}},
            ("failed_attribute_change", "email", EMAIL_TAKEN),
        ),
        (
            "cdp",
            {"type": "track", "userId": "p1", "event": "Signed Up", "messageId": "m-1"},
            ("failed_event", "Signed Up", EVENT_FAILED),
        ),
        ("v2", _v2("delete", {"id": "p1"}), None),
        ("v2", {"type": "object", "action": "identify", "identifiers": {"id": "o"}}, None),
        ("v1", {"method": "DELETE", "path": "/api/v1/customers/p1", "body": None}, None),
        ("cdp", {"type": "page", "userId": "p1"}, None),
        ("app", {"kind": "email"}, None),
    ],
)
def test_identifies_and_events_fail_with_the_documented_type_and_a_reason(
    kind: str, op: dict[str, Any], expected: tuple[str, str, str] | None
) -> None:
    log = Activities(ALWAYS)
    log.observe(kind, "dev-site", [(0, op)], 100.0)
    found = log.page(APP_KEY, {}, 100.0, None)["activities"]
    if expected is None:
        assert found == []
        return
    [activity] = found
    assert (activity["type"], activity["name"], activity["data"]["reason"]) == expected
    assert set(activity) == {
        "id",
        "customer_id",
        "customer_identifiers",
        "data",
        "timestamp",
        "type",
        "name",
    }
    assert set(activity["customer_identifiers"]) == {"id", "email", "cio_id"}
    assert activity["timestamp"] == 100


def test_the_event_id_links_a_failed_event_to_its_call() -> None:
    log = Activities(ALWAYS)
    log.observe("v2", "s", [(0, _v2("event", {"id": "p"}, name="e", id=EVENT_ID))], 1.0)
    [activity] = log.page(APP_KEY, {}, 1.0, None)["activities"]
    assert activity["data"]["event_id"] == EVENT_ID and activity["customer_id"] == "p"


def test_a_failure_appears_only_once_its_delay_has_passed() -> None:
    log = Activities(LateFailureConfig(rate=1.0, min_delay_s=2.0, max_delay_s=2.0))
    log.observe("v2", "s", [(0, _v2("identify", {"id": "p"}, attributes={"a": 1}))], 100.0)
    assert log.page(APP_KEY, {}, 101.9, None)["activities"] == []
    assert log.stats() == {"drawn": 1, "logged": 0, "pending": 1}
    [activity] = log.page(APP_KEY, {}, 102.0, None)["activities"]
    assert activity["timestamp"] == 102


def test_the_configured_share_of_calls_fails() -> None:
    log = Activities(LateFailureConfig(rate=0.25, seed=7, min_delay_s=0.0, max_delay_s=0.0))
    ops = [(i, _v2("event", {"id": f"p{i}"}, name="e")) for i in range(4000)]
    log.observe("v2", "s", ops, 0.0)
    # Binomial(4000, 0.25): mean 1000, standard deviation 27.
    assert 850 <= log.stats()["drawn"] <= 1150


@given(
    delays=st.lists(st.floats(min_value=0, max_value=10), min_size=0, max_size=60),
    limit=st.integers(min_value=1, max_value=100),
    wanted=st.sampled_from([None, "failed_event", "failed_attribute_change"]),
)
def test_paging_walks_every_visible_activity_once_newest_first(
    delays: list[float], limit: int, wanted: str | None
) -> None:
    log = Activities(ALWAYS)
    for n, delay in enumerate(delays):
        action = "event" if n % 2 else "identify"
        op = _v2(action, {"id": f"p{n}"}, name="e", attributes={"a": n})
        log.set(LateFailureConfig(rate=1.0, min_delay_s=delay, max_delay_s=delay))
        log.observe("v2", "s", [(0, op)], 0.0)
    query = {"limit": str(limit), **({"type": wanted} if wanted else {})}
    seen: list[dict[str, Any]] = []
    while True:
        page = log.page(APP_KEY, query, 10.0, None)
        assert len(page["activities"]) <= limit
        seen += page["activities"]
        if not page["next"]:
            break
        query["start"] = page["next"]
    expected = (
        len(delays)
        if wanted is None
        else sum(1 for n in range(len(delays)) if (n % 2 == 1) == (wanted == "failed_event"))
    )
    assert len(seen) == len({a["id"] for a in seen}) == expected
    times = [a["timestamp"] for a in seen]
    assert times == sorted(times, reverse=True)
    assert wanted is None or all(a["type"] == wanted for a in seen)


@pytest.mark.parametrize(
    "doc",
    [
        {"rate": 1.5},
        {"rate": "1"},
        {"min_delay_s": 5, "max_delay_s": 1},
        {"min_delay_s": -1},
        {"daily_read_quota": -1},
        {"sources": {"k": "site"}},
        {"surprise": 1},
        [],
    ],
)
def test_bad_late_failure_settings_are_refused(doc: Any) -> None:
    with pytest.raises(ValueError):
        LateFailureConfig.from_json(doc)


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    config = SandboxConfig(app_rps=10_000)  # reads are never limited here but on purpose
    with serve_in_thread(create_sandbox_app(config)) as url:
        yield url


@pytest.fixture
def sandbox(sandbox_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox_url, timeout=5) as client:
        client.post("/_sandbox/reset").raise_for_status()
        yield client


def _late(sandbox: httpx.Client, **settings: Any) -> None:
    doc = {"rate": 1.0, "min_delay_s": 0.5, "max_delay_s": 1.0, **settings}
    sandbox.post("/_sandbox/late_failures", json=doc).raise_for_status()


def _track(sandbox: httpx.Client, ops: list[dict[str, Any]]) -> None:
    r = sandbox.post("/api/v2/batch", json={"batch": ops}, auth=("dev-site", "dev-api-key"))
    assert r.status_code == 200, r.text


def _read(sandbox: httpx.Client, path: str, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {APP_KEY}"}
    return sandbox.get(path, params=params, headers=headers)


def _logged(sandbox: httpx.Client, count: int, **params: Any) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]] | None:
        r = _read(sandbox, "/v1/activities", limit=100, **params)
        activities: list[dict[str, Any]] = r.json()["activities"]
        return activities if len(activities) >= count else None

    return wait_until(found, timeout_s=30, interval_s=0.3, what=f"{count} activities")


def test_accepted_calls_fail_later_in_the_activity_log(sandbox: httpx.Client) -> None:
    _late(sandbox)
    ops = [
        _v2("identify", {"id": "p1"}, attributes={"email": "taken@example.com"}),
        _v2("event", {"id": "p2"}, name="bought", id=EVENT_ID),
    ]
    _track(sandbox, ops)
    drawn = sandbox.get("/_sandbox/late_failures").json()
    assert (drawn["drawn"], drawn["logged"]) == (2, 0)  # logged once a read finds them due
    activities = _logged(sandbox, 2)
    assert {a["type"] for a in activities} == {"failed_attribute_change", "failed_event"}
    mine = _read(sandbox, "/v1/customers/p2/activities").json()["activities"]
    assert [(a["type"], a["data"]["event_id"]) for a in mine] == [("failed_event", EVENT_ID)]
    by_email = _read(sandbox, "/v1/customers/taken@example.com/activities", id_type="email")
    assert by_email.json()["activities"] == []  # identified by id: the email is its change
    named = _read(sandbox, "/v1/activities", type="failed_event", name="bought").json()
    assert len(named["activities"]) == 1
    late = sandbox.get("/_sandbox/late_failures").json()
    assert (late["drawn"], late["logged"]) == (2, 2)


def test_pages_follow_next_and_a_bad_limit_or_start_is_400(sandbox: httpx.Client) -> None:
    _late(sandbox, min_delay_s=0.0, max_delay_s=0.0)
    _track(sandbox, [_v2("event", {"id": f"p{n}"}, name="e") for n in range(5)])
    _logged(sandbox, 5)
    first = _read(sandbox, "/v1/activities", limit=3).json()
    second = _read(sandbox, "/v1/activities", limit=3, start=first["next"]).json()
    assert len(first["activities"]) == 3 and len(second["activities"]) == 2
    assert second["next"] == ""
    ids = [a["id"] for a in first["activities"] + second["activities"]]
    assert len(set(ids)) == 5
    for params in ({"limit": 0}, {"limit": 101}, {"limit": "x"}, {"start": "garbage!"}):
        r = _read(sandbox, "/v1/activities", **params)
        assert r.status_code == 400 and "error" in r.json()["meta"], params


def test_reads_past_the_daily_quota_answer_429_without_retry_after(
    sandbox: httpx.Client,
) -> None:
    _late(sandbox, daily_read_quota=2)
    assert _read(sandbox, "/v1/activities").status_code == 200
    assert _read(sandbox, "/v1/customers/p1/activities").status_code == 200
    over = _read(sandbox, "/v1/activities")
    assert over.status_code == 429 and "retry-after" not in over.headers


def test_reads_over_the_rate_limit_answer_429_with_retry_after() -> None:
    with (
        serve_in_thread(create_sandbox_app(SandboxConfig(app_rps=2))) as url,
        httpx.Client(base_url=url, timeout=5) as sandbox,
    ):
        answers = [_read(sandbox, "/v1/activities") for _ in range(20)]  # the limit: 2/s
    limited = [r for r in answers if r.status_code == 429]
    assert limited and all(r.headers.get("retry-after") == "1" for r in limited)


def test_an_app_key_sees_only_the_calls_of_its_sources(sandbox: httpx.Client) -> None:
    _late(sandbox, min_delay_s=0.0, max_delay_s=0.0, sources={APP_KEY: ["another-site"]})
    _track(sandbox, [_v2("event", {"id": "p"}, name="e")])
    wait_until(
        lambda: sandbox.get("/_sandbox/late_failures").json()["drawn"] == 1,
        timeout_s=10,
        what="the failure drawn",
    )
    r = _read(sandbox, "/v1/activities")
    assert r.status_code == 200 and r.json()["activities"] == []
