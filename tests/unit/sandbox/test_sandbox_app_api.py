"""The sandbox's App API over real HTTP: answers, limits, recording, injected faults."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox import SandboxConfig, create_sandbox_app
from tests.support.http_server import serve_in_thread

APP_KEY = "dev-app-key"
EMAIL = {"transactional_message_id": 3, "to": "a@example.com", "identifiers": {"id": "p1"}}


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    config = SandboxConfig(app_send_rps=20, app_rps=3, app_broadcast_interval_s=2.0)
    with serve_in_thread(create_sandbox_app(config)) as url:
        yield url


@pytest.fixture
def app(app_url: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {APP_KEY}"}
    with httpx.Client(base_url=app_url, headers=headers, timeout=5) as c:
        c.post("/_sandbox/reset").raise_for_status()
        yield c


def recorded(app: httpx.Client) -> list[dict[str, Any]]:
    return [r["op"] for r in app.get("/_sandbox/received").json()["records"]]


def test_send_answers_delivery_id_and_is_recorded_once(app: httpx.Client) -> None:
    answer = app.post("/v1/send/email", json=EMAIL)
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"delivery_id", "queued_at"}
    [record] = recorded(app)
    assert record["delivery_id"] == body["delivery_id"] and record["kind"] == "email"
    messages = app.get("/v1/customers/p1/messages").json()["messages"]
    assert [m["id"] for m in messages] == [body["delivery_id"]]


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/v1/send/email", {**EMAIL, "identifiers": {}}, "identifiers"),
        ("/v1/send/email", {**EMAIL, "to": ""}, "to is required"),
        ("/v1/send/sms", {"identifiers": {"id": "p"}, "to": "+15555550100"}, "transactional"),
        ("/v1/send/email", {**EMAIL, "attachments": {"a.txt": "%%%"}}, "base64"),
    ],
)
def test_bad_sends_are_400_with_meta_error(
    app: httpx.Client, path: str, body: dict[str, Any], error: str
) -> None:
    answer = app.post(path, json=body)
    assert answer.status_code == 400 and error in answer.json()["meta"]["error"]
    assert recorded(app) == []


def test_wrong_key_is_401(app: httpx.Client) -> None:
    answer = app.post("/v1/send/email", json=EMAIL, headers={"Authorization": "Bearer nope"})
    assert answer.status_code == 401 and recorded(app) == []


def test_sends_over_the_limit_get_429_and_are_not_recorded(app: httpx.Client) -> None:
    statuses = [
        app.post("/v1/send/push", json={**EMAIL, "to": "all"}).status_code for _ in range(30)
    ]
    assert statuses.count(429) >= 1 and statuses[:20] == [200] * 20
    assert len(recorded(app)) == statuses.count(200)


def test_broadcast_triggers_one_per_interval_and_the_seed_alias(app: httpx.Client) -> None:
    first = app.post("/v1/campaigns/7/triggers", json={"data": {"a": 1}})
    assert first.status_code == 200 and isinstance(first.json()["id"], int)
    assert app.post("/v1/send/broadcast", json={"id": 7, "data": {}}).status_code == 429
    assert app.post("/v1/send/broadcast", json={"id": 8, "data": {}}).status_code == 200
    assert [r["broadcast_id"] for r in recorded(app)] == [7, 8]


def test_reads_have_their_own_10_per_second_budget(app: httpx.Client) -> None:
    answers = [app.get("/v1/segments") for _ in range(5)]
    assert [a.status_code for a in answers[:3]] == [200] * 3
    assert answers[0].json() == {"segments": []}
    assert 429 in [a.status_code for a in answers[3:]]


def test_reset_after_recording_is_a_transport_error_yet_recorded(app: httpx.Client) -> None:
    app.post("/_sandbox/app_faults", json={"reset_rate": 1.0}).raise_for_status()
    with pytest.raises(httpx.TransportError):
        app.post("/v1/send/email", json=EMAIL)
    assert len(recorded(app)) == 1


def test_hang_after_recording_times_the_client_out_yet_recorded(app: httpx.Client) -> None:
    app.post("/_sandbox/app_faults", json={"hang_rate": 1.0, "hang_s": 3}).raise_for_status()
    with pytest.raises(httpx.ReadTimeout):
        app.post("/v1/send/email", json=EMAIL, timeout=httpx.Timeout(5, read=0.3))
    assert len(recorded(app)) == 1


def test_503_with_retry_after_records_nothing(app: httpx.Client) -> None:
    faults = {"error_rate": 1.0, "error_status": 503, "retry_after_s": 0.5}
    app.post("/_sandbox/app_faults", json=faults).raise_for_status()
    answer = app.post("/v1/send/email", json=EMAIL)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "0.5"
    assert recorded(app) == []


def test_fault_settings_are_checked(app: httpx.Client) -> None:
    answer = app.post("/_sandbox/app_faults", json={"hang_rate": 0.7, "reset_rate": 0.7})
    assert answer.status_code == 400 and "add up" in answer.json()["error"]
