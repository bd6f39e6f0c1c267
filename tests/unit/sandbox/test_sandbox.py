"""The sandbox Customer.io over real HTTP: Track API answers, recording, faults, controls."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from sandbox import SandboxConfig, create_sandbox_app
from tests.support.http_server import serve_in_thread
from tests.support.sandbox import KEY, OTHER_KEY, OTHER_SITE, SITE, event

UNAUTHORIZED = {"meta": {"error": "Unauthorized request"}}


def received(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Every recorded op, following `next` until a page comes back empty."""
    records: list[dict[str, Any]] = []
    after = 0
    while True:
        page = client.get("/_sandbox/received", params={**params, "after": after}).json()
        if not page["records"]:
            return records
        records.extend(page["records"])
        after = page["next"]


def request_log(client: httpx.Client) -> list[dict[str, Any]]:
    return list(client.get("/_sandbox/requests").json()["records"])


def batch(client: httpx.Client, ops: list[Any], **kwargs: Any) -> httpx.Response:
    return client.post("/api/v2/batch", json={"batch": ops}, **kwargs)


# --- /api/v2/batch and /api/v2/entity ----------------------------------------------------------


def test_healthz(client: httpx.Client) -> None:
    """/healthz answers 200 {} and is not logged as a Track API request."""
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {})
    assert request_log(client) == []


def test_valid_batch_is_200_and_recorded_in_order(client: httpx.Client) -> None:
    """A batch of valid ops answers 200 {} and records each op with seq, index and site."""
    ops = [event(i) for i in range(3)]
    response = batch(client, ops)
    assert (response.status_code, response.json()) == (200, {})
    records = received(client)
    assert [r["op"] for r in records] == ops
    assert [(r["seq"], r["index"], r["site_id"], r["kind"]) for r in records] == [
        (1, 0, SITE, "v2"),
        (1, 1, SITE, "v2"),
        (1, 2, SITE, "v2"),
    ]
    assert all(isinstance(r["received_at"], float) for r in records)


def test_partly_invalid_batch_is_207_naming_batch_indexes(client: httpx.Client) -> None:
    """Invalid items come back by batch_index in a 207; only the valid ones are recorded."""
    ops = [event(0), {"type": "person", "action": "event"}, event(2), "nope", event(4)]
    response = batch(client, ops)
    assert response.status_code == 207
    assert response.json() == {
        "errors": [
            {
                "batch_index": 1,
                "reason": "required",
                "field": "identifiers",
                "message": "identifiers is required",
            },
            {
                "batch_index": 3,
                "reason": "invalid",
                "field": "op",
                "message": "operation must be a JSON object",
            },
        ]
    }
    assert [(r["index"], r["op"]) for r in received(client)] == [
        (0, ops[0]),
        (2, ops[2]),
        (4, ops[4]),
    ]


def test_oversized_op_in_batch_is_a_207_item(client: httpx.Client) -> None:
    """An op over 32,768 bytes is refused as too_large; its neighbours are accepted."""
    response = batch(client, [event(0), event(1, pad="x" * 33_000)])
    assert response.status_code == 207
    assert [(e["batch_index"], e["reason"]) for e in response.json()["errors"]] == [
        (1, "too_large")
    ]
    assert len(received(client)) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b"{}",
        b'{"batch": {}}',
        b'{"batch": []}',
        b'{"batch": "x"}',
    ],
    ids=["not-json", "array", "no-batch", "batch-object", "batch-empty", "batch-string"],
)
def test_malformed_batch_is_400(client: httpx.Client, body: bytes) -> None:
    """A body that is not {"batch": [op, ...]} is refused whole with field "batch"."""
    response = client.post("/api/v2/batch", content=body)
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert (error["reason"], error["field"]) == ("invalid", "batch")
    assert "batch_index" not in error
    assert received(client) == []


@pytest.mark.parametrize(
    "auth",
    [(SITE, "wrong-key"), ("unknown-site", KEY), (OTHER_SITE, KEY), None],
    ids=["wrong-key", "unknown-site", "other-sites-key", "no-auth"],
)
def test_bad_credentials_are_401(sandbox_url: str, client: httpx.Client, auth: Any) -> None:
    """Basic auth must match a configured (site_id, api_key) pair, else 401 and nothing kept."""
    with httpx.Client(base_url=sandbox_url, auth=auth) as stranger:
        response = batch(stranger, [event(0)])
    assert (response.status_code, response.json()) == (401, UNAUTHORIZED)
    assert received(client) == []
    assert [r["status"] for r in request_log(client)] == [401]


def test_body_over_max_body_bytes_is_413(client: httpx.Client) -> None:
    """A 500,001-byte body is refused with 413; exactly 500,000 bytes is processed."""
    envelope = orjson.dumps({"batch": [event(0, pad="")]})
    at_limit = envelope.replace(b'"pad":""', b'"pad":"' + b"x" * (500_000 - len(envelope)) + b'"')
    assert len(at_limit) == 500_000
    over = at_limit.replace(b'"pad":"', b'"pad":"x')
    response = client.post("/api/v2/batch", content=over)
    assert response.status_code == 413
    assert response.json()["errors"][0]["reason"] == "too_large"
    assert client.post("/api/v2/batch", content=at_limit).status_code == 207  # op > 32 KB
    assert [(r["status"], r["body_bytes"]) for r in request_log(client)] == [
        (413, 500_001),
        (207, 500_000),
    ]


def test_streamed_body_over_limit_is_413_without_content_length(client: httpx.Client) -> None:
    """A chunked body is measured as it arrives and refused once past the limit."""

    def chunks() -> Iterator[bytes]:
        yield b'{"batch": ["'
        for _ in range(600):
            yield b"x" * 1000
        yield b'"]}'

    response = client.post("/api/v2/batch", content=chunks())
    assert response.status_code == 413
    assert request_log(client)[0]["body_bytes"] > 500_000


def test_entity_accepts_one_op(client: httpx.Client) -> None:
    """/api/v2/entity takes one op as the body: 200 {} and one record."""
    response = client.post("/api/v2/entity", json=event(7))
    assert (response.status_code, response.json()) == (200, {})
    assert [(r["index"], r["op"]) for r in received(client)] == [(0, event(7))]


def test_invalid_entity_is_400_without_batch_index(client: httpx.Client) -> None:
    """An invalid entity op answers 400 with one error naming the field."""
    response = client.post("/api/v2/entity", json={"type": "object", "action": "event"})
    assert response.status_code == 400
    assert response.json() == {
        "errors": [
            {
                "reason": "invalid",
                "field": "action",
                "message": "action 'event' is not valid for type object",
            }
        ]
    }
    assert received(client) == []


def test_entity_over_max_op_bytes_is_413(client: httpx.Client) -> None:
    """An entity body over 32,768 bytes is refused with 413."""
    response = client.post("/api/v2/entity", json=event(0, pad="x" * 32_768))
    assert response.status_code == 413
    assert received(client) == []


# --- recording, paging, stats, reset ---------------------------------------------------------


def test_received_pages_follow_next_until_empty(client: httpx.Client) -> None:
    """Paging with limit returns every record once, in order, with a running cursor."""
    batch(client, [event(i) for i in range(25)]).raise_for_status()
    pages = []
    after = 0
    while True:
        page = client.get("/_sandbox/received", params={"after": after, "limit": 10}).json()
        if not page["records"]:
            break
        pages.append([r["op"]["attributes"]["i"] for r in page["records"]])
        assert page["total"] == 25
        after = page["next"]
    assert pages == [list(range(10)), list(range(10, 20)), list(range(20, 25))]
    assert after == 25


def test_received_filters_by_site(sandbox_url: str, client: httpx.Client) -> None:
    """site_id narrows records to one workspace; paging still covers each exactly once."""
    with httpx.Client(base_url=sandbox_url, auth=(OTHER_SITE, OTHER_KEY)) as other:
        for i in range(6):
            batch(client if i % 2 else other, [event(i)]).raise_for_status()
    mine = received(client, site_id=SITE, limit=2)
    assert [r["op"]["attributes"]["i"] for r in mine] == [1, 3, 5]
    theirs = client.get("/_sandbox/received", params={"site_id": OTHER_SITE}).json()
    assert ([r["site_id"] for r in theirs["records"]], theirs["total"]) == ([OTHER_SITE] * 3, 3)
    nobody = client.get("/_sandbox/received", params={"site_id": "nobody"}).json()
    assert (nobody["records"], nobody["total"]) == ([], 0)


def test_request_log_pages(client: httpx.Client) -> None:
    """Every Track API request is logged with seq, status, bytes and op count."""
    batch(client, [event(0), event(1)]).raise_for_status()
    client.post("/api/v2/entity", json={})
    first = client.get("/_sandbox/requests", params={"limit": 1}).json()
    second = client.get("/_sandbox/requests", params={"after": first["next"]}).json()
    (one,) = first["records"]
    (two,) = second["records"]
    assert one["path"] == "/api/v2/batch"
    assert {k: one[k] for k in ("seq", "method", "site_id", "status", "op_count")} == {
        "seq": 1,
        "method": "POST",
        "site_id": SITE,
        "status": 200,
        "op_count": 2,
    }
    assert one["body_bytes"] == len(orjson.dumps({"batch": [event(0), event(1)]}))
    assert (two["seq"], two["path"], two["status"]) == (2, "/api/v2/entity", 400)
    assert (first["total"], second["next"]) == (2, 2)


@pytest.mark.parametrize(
    "params", [{"after": "x"}, {"after": "-1"}, {"limit": "0"}], ids=["text", "negative", "zero"]
)
def test_bad_paging_parameters_are_400(client: httpx.Client, params: dict[str, str]) -> None:
    """Cursor and limit must be integers in range."""
    response = client.get("/_sandbox/received", params=params)
    assert response.status_code == 400
    assert "error" in response.json()


def test_stats_count_requests_ops_and_largest_body(client: httpx.Client) -> None:
    """Stats add up statuses, accepted and rejected ops, v1 calls and the largest body."""
    big = {"batch": [event(0), {"type": "person"}, event(2)]}
    batch(client, big["batch"])
    batch(client, [event(3)])
    client.post("/api/v2/entity", json={"type": "person"})
    client.post("/api/v1/merge_customers", json={"primary": {"id": "1"}, "secondary": {"id": "2"}})
    assert client.get("/_sandbox/stats").json() == {
        "requests": 4,
        "by_status": {"200": 2, "207": 1, "400": 1},
        "ops_accepted": 3,
        "ops_rejected": 2,
        "max_body_bytes": len(orjson.dumps(big)),
        "v1_accepted": 1,
        "cdp_accepted": 0,
        "app_accepted": 0,
        "records_dropped": 0,
        "requests_dropped": 0,
    }


def test_reset_forgets_records_stats_and_faults(client: httpx.Client) -> None:
    """After reset nothing is recorded, counters are zero and faults are cleared."""
    batch(client, [event(0)])
    client.post("/_sandbox/faults", json={"latency_ms": 5, "status_sequence": [503]})
    client.post("/_sandbox/reset").raise_for_status()
    assert received(client) == []
    assert request_log(client) == []
    assert client.get("/_sandbox/stats").json()["requests"] == 0
    assert client.get("/_sandbox/faults").json()["status_sequence"] == []
    assert batch(client, [event(1)]).status_code == 200
    assert received(client)[0]["seq"] == 1


def test_count_mode_keeps_counters_not_ops() -> None:
    """record="count" answers normally and counts, but keeps no ops."""
    with (
        serve_in_thread(create_sandbox_app(SandboxConfig(record="count"))) as url,
        httpx.Client(base_url=url, auth=("dev-site", "dev-api-key")) as c,
    ):
        assert batch(c, [event(i) for i in range(1000)]).status_code == 200
        assert received(c) == []
        assert c.get("/_sandbox/stats").json()["ops_accepted"] == 1000
        assert [r["op_count"] for r in request_log(c)] == [1000]


def test_max_recorded_ops_caps_memory() -> None:
    """Ops beyond max_recorded_ops are counted as dropped, the first ones kept."""
    with (
        serve_in_thread(create_sandbox_app(SandboxConfig(max_recorded_ops=3))) as url,
        httpx.Client(base_url=url, auth=("dev-site", "dev-api-key")) as c,
    ):
        batch(c, [event(0), event(1)]).raise_for_status()
        batch(c, [event(2), event(3), event(4)]).raise_for_status()
        assert [r["op"]["attributes"]["i"] for r in received(c)] == [0, 1, 2]
        stats = c.get("/_sandbox/stats").json()
        assert (stats["ops_accepted"], stats["records_dropped"]) == (5, 2)
