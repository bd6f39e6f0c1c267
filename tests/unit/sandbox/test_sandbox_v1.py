"""The sandbox's Track API v1 endpoints over real HTTP, and the thread server they run on."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from sandbox import create_sandbox_app
from tests.support.http_server import serve_in_thread


def v1_records(client: httpx.Client) -> list[dict[str, Any]]:
    records = client.get("/_sandbox/received").json()["records"]
    assert {r["kind"] for r in records} <= {"v1"}
    return [r["op"] for r in records]


def test_segment_add_records_method_path_query_and_body(client: httpx.Client) -> None:
    """A manual-segment add is answered 200 {} and recorded with its query and body."""
    response = client.post(
        "/api/v1/segments/7/add_customers", params={"id_type": "email"}, json={"ids": ["a@b.c"]}
    )
    assert (response.status_code, response.json()) == (200, {})
    assert v1_records(client) == [
        {
            "method": "POST",
            "path": "/api/v1/segments/7/add_customers",
            "query": {"id_type": "email"},
            "body": {"ids": ["a@b.c"]},
        }
    ]
    assert client.get("/_sandbox/stats").json()["v1_accepted"] == 1


@pytest.mark.parametrize("ids", [[], list(range(1001)), None], ids=["empty", "1001", "missing"])
def test_segment_ids_out_of_range_are_400(client: httpx.Client, ids: Any) -> None:
    """Segment add/remove needs 1..1000 ids, else 400 with a v1 meta error."""
    response = client.post("/api/v1/segments/7/remove_customers", json={"ids": ids})
    assert response.status_code == 400
    assert set(response.json()) == {"meta"}
    assert response.json()["meta"]["error"]
    assert v1_records(client) == []


def test_form_submit_is_204_without_body(client: httpx.Client) -> None:
    """A form submission answers 204 with an empty body and is recorded."""
    response = client.post("/api/v1/forms/signup/submit", json={"data": {"email": "a@b.c"}})
    assert (response.status_code, response.content) == (204, b"")
    assert [r["path"] for r in v1_records(client)] == ["/api/v1/forms/signup/submit"]
    bad = client.post("/api/v1/forms/signup/submit", json={"data": "email"})
    assert bad.status_code == 400


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/unsubscribe/dlv-1", {"unsubscribe": True}),
        ("/api/v1/metrics", {"delivery_id": "dlv-1", "metric": "clicked"}),
        ("/api/v1/push/events", {"delivery_id": "dlv-1", "event": "opened", "device_id": "t"}),
    ],
)
def test_endpoints_without_auth(
    sandbox_url: str, client: httpx.Client, path: str, body: Any
) -> None:
    """unsubscribe, metrics and push events need no credentials."""
    response = httpx.post(f"{sandbox_url}{path}", json=body)
    assert (response.status_code, response.json()) == (200, {})
    assert v1_records(client)[0]["body"] == body
    assert client.get("/_sandbox/received").json()["records"][0]["site_id"] is None


def test_unsubscribe_requires_json_content_type(client: httpx.Client) -> None:
    """/unsubscribe refuses a body not sent as application/json, as Customer.io documents."""
    response = client.post("/unsubscribe/dlv-1", content=b'{"unsubscribe": true}')
    assert response.status_code == 400
    assert v1_records(client) == []


def test_anonymous_event_needs_auth_and_a_name(sandbox_url: str, client: httpx.Client) -> None:
    """/api/v1/events takes Basic auth and a non-blank event name."""
    assert httpx.post(f"{sandbox_url}/api/v1/events", json={"name": "x"}).status_code == 401
    blank = client.post("/api/v1/events", json={"name": " ", "anonymous_id": "a"})
    assert blank.json() == {"meta": {"error": "event name must not be blank"}}
    invite = {"name": "invite", "data": {"recipient": "a@b.c"}}
    assert client.post("/api/v1/events", json=invite).status_code == 200
    assert [r["body"] for r in v1_records(client)] == [invite]


def test_region_reports_this_server(sandbox_url: str, client: httpx.Client) -> None:
    """/api/v1/accounts/region answers with this server's base URL and is not recorded."""
    response = client.get("/api/v1/accounts/region")
    assert response.json() == {"url": sandbox_url, "region": "us", "environment_id": 1}
    assert httpx.get(f"{sandbox_url}/api/v1/accounts/region").status_code == 401
    assert v1_records(client) == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/api/v1/customers/42", {"email": "a@b.c"}),
        ("DELETE", "/api/v1/customers/42", None),
        ("POST", "/api/v1/customers/42/events", {"name": "bought"}),
        ("PUT", "/api/v1/customers/42/devices", {"device": {"id": "t", "platform": "ios"}}),
        ("DELETE", "/api/v1/customers/42/devices/t", None),
        ("POST", "/api/v1/customers/42/suppress", None),
        ("POST", "/api/v1/customers/42/unsuppress", None),
        ("POST", "/api/v1/merge_customers", {"primary": {"id": "1"}, "secondary": {"id": "2"}}),
        ("PUT", "/api/v1/customers/a%2Fb", {"plan": "pro"}),
    ],
)
def test_person_v1_endpoints_are_recorded(
    client: httpx.Client, method: str, path: str, body: Any
) -> None:
    """The person v1 endpoints answer 200 {} and record the call as sent."""
    response = client.request(method, path, json=body)
    assert (response.status_code, response.json()) == (200, {})
    assert v1_records(client) == [{"method": method, "path": path, "query": {}, "body": body}]


def test_v1_body_that_is_not_json_is_400(client: httpx.Client) -> None:
    """A v1 body that does not parse is refused with a v1 meta error."""
    response = client.put("/api/v1/customers/42", content=b"{email")
    assert response.status_code == 400
    assert response.json() == {"meta": {"error": "request body is not valid JSON"}}


def test_serve_in_thread_releases_its_port() -> None:
    """Two servers get different ports, and each port refuses connections after exit."""
    with (
        serve_in_thread(create_sandbox_app()) as first,
        serve_in_thread(create_sandbox_app()) as second,
    ):
        assert first != second
        assert httpx.get(f"{first}/healthz").status_code == 200
    for url in (first, second):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", urlsplit(url).port or 0), timeout=1).close()
