"""What a delivered job asked of a person (each lane's `sent_call`), which failures it can
answer for (`matches`), the index's stored copy, and the late-failure filter's checks."""

from __future__ import annotations

from typing import Any

import pytest

from service.errors import InvalidRequest
from service.jobs import SentCall, job_kind
from service.lanes import registry  # noqa: F401  (registers every lane's job kinds)
from service.store.late_failures import UNLINKED, LateFilter, build_record
from service.store.sent_index import SentJob, could_link, matches


def _call(kind: str, data: Any) -> SentCall | None:
    reader = job_kind(kind).sent_call
    assert reader is not None
    return reader(data)


def test_track_identifies_and_events_name_their_person_and_event() -> None:
    identify = {
        "type": "person",
        "action": "identify",
        "identifiers": {"id": 42},
        "attributes": {"email": "a@example.com", "plan": "pro"},
    }
    assert _call("v2", identify) == SentCall("identify", {"id": "42"}, "", ("email", "plan"))
    event = {
        "type": "person",
        "action": "event",
        "identifiers": {"email": "a@example.com"},
        "name": "paid",
        "id": "01J0",
    }
    assert _call("v2", event) == SentCall("event", {"email": "a@example.com"}, "paid", (), "01J0")
    assert _call("v2", {**identify, "action": "delete"}) is None
    assert _call("v2", {"type": "object", "action": "identify", "identifiers": {}}) is None


def test_pipelines_calls_name_their_person_by_user_id_and_email() -> None:
    identify = {"type": "identify", "userId": "42", "traits": {"email": "a@example.com"}}
    assert _call("cdp", identify) == SentCall(
        "identify", {"id": "42", "email": "a@example.com"}, attributes=("email",)
    )
    track = {"type": "track", "userId": "42", "event": "paid", "messageId": "m-1"}
    assert _call("cdp", track) == SentCall("event", {"id": "42"}, "paid", event_id="m-1")
    assert _call("cdp", {"type": "track", "anonymousId": "x", "event": "paid"}) is None
    assert _call("cdp", {"type": "page", "userId": "42"}) is None


@pytest.mark.parametrize(
    ("activity_type", "name", "call", "expected"),
    [
        ("failed_event", "paid", SentCall("event", {"id": "1"}, "paid"), True),
        ("failed_event", "paid", SentCall("event", {"id": "1"}, "other"), False),
        ("failed_event", "paid", SentCall("identify", {"id": "1"}), False),
        ("failed_attribute_change", "email", SentCall("identify", {}, "", ("email",)), True),
        ("failed_attribute_change", "email", SentCall("identify", {"email": "a"}), True),
        ("failed_attribute_change", "plan", SentCall("identify", {"id": "1"}, "", ("n",)), False),
        ("failed_attribute_change", "", SentCall("identify", {"id": "1"}), True),
        ("failed_batch_update", "", SentCall("identify", {"id": "1"}), False),
        ("failed_event", "paid", None, False),
    ],
)
def test_a_call_matches_only_the_failures_it_could_cause(
    activity_type: str, name: str, call: SentCall | None, expected: bool
) -> None:
    assert matches(call, activity_type, name) is expected


def test_only_failures_naming_a_person_or_an_event_can_link() -> None:
    person = {"type": "failed_event", "customer_id": "42"}
    assert could_link(person)
    assert could_link({"type": "failed_event", "data": {"event_id": "e"}})
    assert not could_link({"type": "failed_event", "customer_identifiers": {"email": None}})
    assert not could_link({"type": "failed_batch_update", "customer_id": "42"})


def test_a_stored_copy_reads_back_as_it_was_written() -> None:
    job = SentJob("{acme:3}:1-0", "v2", "track", "billing", 1, 2, b'{"a":"b\\nc"}')
    assert SentJob.parse(job.copy()) == job
    assert job.as_dict()["payload"] == {"a": "b\nc"}


def test_records_count_under_their_job_s_lane_and_producer_or_as_unlinked() -> None:
    activity = {"id": "a1", "customer_id": "42", "timestamp": 7, "data": {"reason": "taken"}}
    job = SentJob("{acme:3}:1-0", "v2", "track", "", 1, 2, b"{}")
    field, _ = build_record("acme", "failed_event", activity, job, 9_000)
    assert field == "track|unknown|failed_event"  # a job stored before producers had names
    field, raw = build_record("acme", "failed_event", activity, None, 9_000)
    assert field == f"{UNLINKED}|{UNLINKED}|failed_event"
    assert b'"reason":"taken"' in raw and b'"failed_ms":7000' in raw


def test_the_filter_refuses_an_unknown_lane_type_or_field() -> None:
    assert LateFilter.parse(lane="unlinked").lane == UNLINKED
    assert LateFilter.parse(lane="track", since="1000").since_ms == 1000
    with pytest.raises(InvalidRequest):
        LateFilter.parse(lane="fax")
    with pytest.raises(InvalidRequest):
        LateFilter.parse(type="failed_everything")
    with pytest.raises(InvalidRequest):
        LateFilter.from_fields({"reason": "x"})
