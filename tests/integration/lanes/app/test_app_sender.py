"""`AppSender` against the real sandbox and Redis: each verdict's engine class and outcome
record, the message lookup that confirms an ambiguous send, and rate-slot deferral."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from service.config import Settings
from service.delivery.outcomes import Outcome, OutcomeClass
from service.lanes.app.confirm import matches
from service.lanes.app.jobs import app_job
from service.lanes.app.outcomes import Outcomes, State
from service.lanes.app.sender import AppSender

EMAIL = {"transactional_message_id": 7, "to": "a@example.com", "identifiers": {"id": "p1"}}


class DrainedSender(AppSender):
    """The sender as the drain runs it: a success's record (`Outcome.pending`) is written
    with the resolve, here right after the send."""

    def send_batch(self, body: bytes, *, op_count: int) -> Outcome:
        outcome = super().send_batch(body, op_count=op_count)
        if outcome.pending is not None:
            outcome.pending.run()
        return outcome


@pytest.fixture
def sender(
    make_settings: Callable[..., Settings], app_sandbox_url: str
) -> Iterator[Callable[..., AppSender]]:
    made: list[AppSender] = []

    def build(**overrides: Any) -> AppSender:
        values = {
            "app_api_key": "dev-app-key",
            "app_url": app_sandbox_url,
            "upstream_timeout_s": 0.5,
        }
        settings = make_settings(**{**values, **overrides})
        made.append(
            DrainedSender(
                settings.workspaces[0],
                settings.app,
                settings.redis,
                timeout_s=settings.drain.upstream_timeout_s,
            )
        )
        return made[-1]

    yield build
    for s in made:
        s.close()


def job(job_id: str, body: dict[str, Any], path: str = "/v1/send/email", **kw: Any) -> bytes:
    limit = kw.pop("limit", "send")
    return app_job(
        job_id, path, body, limit=limit, route=job_id, op_type="send_email", **kw
    ).payload


def record(s: AppSender, job_id: str) -> Any:
    found = Outcomes(s.redis, s.app).get("default", job_id)
    assert found is not None
    return found


def received(app_sandbox: httpx.Client) -> list[Any]:
    return [r["op"] for r in app_sandbox.get("/_sandbox/received").json()["records"]]


def test_delivered_records_customerio_answer(
    sender: Callable[..., AppSender], app_sandbox: httpx.Client
) -> None:
    s = sender()
    outcome = s.send_batch(job("j1", EMAIL), op_count=1)
    assert outcome.outcome_class is OutcomeClass.SUCCESS
    found = record(s, "j1")
    [sent] = received(app_sandbox)
    assert found.state is State.DELIVERED and found.delivery_id == sent["delivery_id"]
    assert found.body["delivery_id"] == sent["delivery_id"] and found.attempts == 1


def test_refusal_is_invalid_with_customerio_message(
    sender: Callable[..., AppSender], app_sandbox: httpx.Client
) -> None:
    s = sender()
    outcome = s.send_batch(job("j2", {**EMAIL, "identifiers": {}}), op_count=1)
    assert outcome.outcome_class is OutcomeClass.INVALID and "identifiers" in outcome.detail
    assert record(s, "j2").state is State.REFUSED and record(s, "j2").status == 400


@pytest.mark.parametrize("fault", ["reset_before_rate", "hang_rate"])
def test_ambiguous_is_never_resent(
    sender: Callable[..., AppSender], app_sandbox: httpx.Client, fault: str
) -> None:
    """reset before recording: not found by the lookup, dead-lettered; a hang after
    recording with no template id on the send cannot be confirmed either."""
    app_sandbox.post("/_sandbox/app_faults", json={fault: 1.0, "hang_s": 2}).raise_for_status()
    s = sender()
    body = (
        {**EMAIL}
        if fault == "reset_before_rate"
        else {k: v for k, v in EMAIL.items() if k != "transactional_message_id"}
        | {"body": "b", "subject": "s", "from": "f@x.io"}
    )
    outcome = s.send_batch(job("j3", body), op_count=1)
    assert outcome.outcome_class is OutcomeClass.AMBIGUOUS
    assert "may have acted" in outcome.detail
    assert record(s, "j3").state is State.AMBIGUOUS
    assert len(received(app_sandbox)) == (0 if fault == "reset_before_rate" else 1)


@pytest.mark.parametrize("fault", ["reset_rate", "hang_rate"])
def test_ambiguous_send_confirmed_by_message_lookup(
    sender: Callable[..., AppSender], app_sandbox: httpx.Client, fault: str
) -> None:
    app_sandbox.post("/_sandbox/app_faults", json={fault: 1.0, "hang_s": 2}).raise_for_status()
    s = sender()
    outcome = s.send_batch(job("j4", EMAIL), op_count=1)
    assert outcome.outcome_class is OutcomeClass.SUCCESS
    [sent] = received(app_sandbox)
    assert record(s, "j4").delivery_id == sent["delivery_id"]


def test_lookup_never_takes_a_delivery_already_claimed(
    sender: Callable[..., AppSender], app_sandbox: httpx.Client
) -> None:
    """One clean send, then an ambiguous one whose delivery the lookup cannot see (reset
    before recording): the clean send's message matches but is claimed, so: ambiguous."""
    s = sender()
    assert s.send_batch(job("j5", EMAIL), op_count=1).outcome_class is OutcomeClass.SUCCESS
    app_sandbox.post("/_sandbox/app_faults", json={"reset_before_rate": 1.0}).raise_for_status()
    assert s.send_batch(job("j6", EMAIL), op_count=1).outcome_class is OutcomeClass.AMBIGUOUS


def test_503_with_retry_after_is_transient_with_the_wait(
    sender: Callable[..., AppSender], app_sandbox: httpx.Client
) -> None:
    faults = {"error_rate": 1.0, "error_status": 503, "retry_after_s": 0.25}
    app_sandbox.post("/_sandbox/app_faults", json=faults).raise_for_status()
    s = sender()
    outcome = s.send_batch(job("j7", EMAIL), op_count=1)
    assert outcome.outcome_class is OutcomeClass.TRANSIENT and outcome.retry_after_s == 0.25
    assert record(s, "j7").state is State.RETRYING


@pytest.mark.parametrize(
    ("status", "opt_in", "expected"),
    [
        (502, False, OutcomeClass.AMBIGUOUS),
        (500, True, OutcomeClass.TRANSIENT),
        (429, False, OutcomeClass.THROTTLE),
    ],
)
def test_error_statuses(
    sender: Callable[..., AppSender],
    app_sandbox: httpx.Client,
    status: int,
    opt_in: bool,
    expected: OutcomeClass,
) -> None:
    app_sandbox.post(
        "/_sandbox/app_faults", json={"error_rate": 1.0, "error_status": status}
    ).raise_for_status()
    s = sender(app_resend_ambiguous=opt_in)
    assert s.send_batch(job("j8", EMAIL), op_count=1).outcome_class is expected


def test_closed_port_is_resent(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(app_api_key="k", app_url="http://127.0.0.1:9", upstream_timeout_s=1)
    s = AppSender(
        settings.workspaces[0],
        settings.app,
        settings.redis,
        timeout_s=settings.drain.upstream_timeout_s,
    )
    try:
        outcome = s.send_batch(job("j9", EMAIL), op_count=1)
    finally:
        s.close()
    assert outcome.outcome_class is OutcomeClass.TRANSIENT and outcome.detail == "connect_refused"


def test_a_second_trigger_of_one_broadcast_is_deferred(
    sender: Callable[..., AppSender], app_sandbox: httpx.Client
) -> None:
    s = sender(app_broadcast_interval_s=30)
    path = "/v1/campaigns/4/triggers"
    first = s.send_batch(job("t1", {"data": {}}, path, limit="broadcast", bucket="4"), op_count=1)
    second = s.send_batch(job("t2", {"data": {}}, path, limit="broadcast", bucket="4"), op_count=1)
    assert first.outcome_class is OutcomeClass.SUCCESS
    assert second.outcome_class is OutcomeClass.DEFERRED and second.retry_after_s is not None
    assert second.retry_after_s > 25
    assert len(received(app_sandbox)) == 1
    assert record(s, "t1").body == {"id": received(app_sandbox)[0]["id"]}


def test_a_send_is_timed_without_its_wait_for_a_slot(
    sender: Callable[..., AppSender], app_sandbox: httpx.Client
) -> None:
    """The upstream duration is the request's: a send that slept for its rate slot is not
    slower for Customer.io (the wait has its own histogram)."""
    s = sender(app_send_rps=4, app_rate_headroom=1.0)
    assert s.send_batch(job("w1", EMAIL), op_count=1).outcome_class is OutcomeClass.SUCCESS
    labels = {"workspace": "default", "limit_class": "send"}
    waited_before_s = REGISTRY.get_sample_value("cioq_app_rate_wait_seconds_sum", labels) or 0.0
    started_s = time.perf_counter()
    second = s.send_batch(job("w2", {**EMAIL, "to": "b@example.com"}), op_count=1)
    took_s = time.perf_counter() - started_s
    waited_s = (REGISTRY.get_sample_value("cioq_app_rate_wait_seconds_sum", labels) or 0.0) - (
        waited_before_s
    )
    assert second.outcome_class is OutcomeClass.SUCCESS and waited_s > 0.1
    assert second.upstream_s is not None and second.upstream_s + waited_s <= took_s
    assert len(received(app_sandbox)) == 2


@pytest.mark.parametrize(
    ("message", "ok"),
    [
        (
            {"type": "email", "created": 100, "transactional_message_id": 7, "recipient": "a@x"},
            True,
        ),
        ({"type": "email", "created": 99, "transactional_message_id": "7"}, True),
        ({"type": "email", "created": 98, "transactional_message_id": 7}, False),
        ({"type": "push", "created": 100, "transactional_message_id": 7}, False),
        ({"type": "email", "created": 100}, False),
        ({"type": "email", "created": 100, "transactional_message_id": 8}, False),
        (
            {"type": "email", "created": 100, "transactional_message_id": 7, "recipient": "b@x"},
            False,
        ),
        ("nope", False),
    ],
)
def test_match_rules(message: Any, ok: bool) -> None:
    assert matches(message, kind="email", template=7, to="a@x", since_s=100.4) is ok


def test_envelope_is_sent_as_stored(
    sender: Callable[..., AppSender], app_sandbox: httpx.Client
) -> None:
    body = {**EMAIL, "message_data": {"n": 1.5, "s": "é"}}
    sender().send_batch(job("j10", body), op_count=1)
    assert received(app_sandbox)[0]["body"] == orjson.loads(orjson.dumps(body))
