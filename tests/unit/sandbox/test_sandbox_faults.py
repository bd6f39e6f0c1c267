"""The sandbox's steering over real HTTP: injected faults, poison ops, credentials, v1 calls."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.support.sandbox import OTHER_SITE, SITE, event


def send(client: httpx.Client, *ops: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return client.post("/api/v2/batch", json={"batch": list(ops) or [event(0)]}, **kwargs)


def set_faults(client: httpx.Client, **faults: Any) -> dict[str, Any]:
    response = client.post("/_sandbox/faults", json=faults)
    response.raise_for_status()
    return dict(response.json())


def records(client: httpx.Client) -> list[dict[str, Any]]:
    return list(client.get("/_sandbox/received").json()["records"])


def statuses_logged(client: httpx.Client) -> list[int]:
    return [r["status"] for r in client.get("/_sandbox/requests").json()["records"]]


# --- faults -----------------------------------------------------------------------------------


def test_status_sequence_answers_in_order_then_resumes(client: httpx.Client) -> None:
    """Listed statuses answer the next requests one each; a 2xx entry lets one through."""
    set_faults(client, status_sequence=[503, 500, 200, 429])
    got = [send(client, event(i)).status_code for i in range(6)]
    assert got == [503, 500, 200, 429, 200, 200]
    assert [r["op"]["attributes"]["i"] for r in records(client)] == [2, 4, 5]
    assert statuses_logged(client) == got


def test_get_faults_shows_the_unused_part_of_the_sequence(client: httpx.Client) -> None:
    """GET /_sandbox/faults reports current settings and what is left of status_sequence."""
    posted = set_faults(client, status_sequence=[502, 503], latency_ms=1)
    assert posted == {
        "latency_ms": 1,
        "error_rate": 0.0,
        "error_status": 503,
        "status_sequence": [502, 503],
        "retry_after_s": None,
        "site_ids": None,
        "seed": None,
        "hang_s": 60.0,
        "poison": True,
    }
    send(client)
    current = client.get("/_sandbox/faults").json()
    assert (current["status_sequence"], current["latency_ms"]) == ([503], 1)
    assert set_faults(client) == client.get("/_sandbox/faults").json()
    assert client.get("/_sandbox/faults").json()["status_sequence"] == []


def test_error_rate_with_seed_is_repeatable(client: httpx.Client) -> None:
    """The same seed yields the same pattern of injected errors; both outcomes occur."""
    patterns = []
    for _ in range(2):
        set_faults(client, error_rate=0.5, error_status=502, seed=1234)
        patterns.append([send(client).status_code for _ in range(30)])
    assert patterns[0] == patterns[1]
    assert set(patterns[0]) == {200, 502}
    assert len(records(client)) == 2 * patterns[0].count(200)


def test_error_rate_one_fails_everything_and_records_nothing(client: httpx.Client) -> None:
    """Injected errors are logged with their status but never recorded as accepted ops."""
    set_faults(client, error_rate=1.0)
    response = send(client)
    assert response.status_code == 503
    assert "retry-after" not in response.headers
    assert records(client) == []
    stats = client.get("/_sandbox/stats").json()
    assert (stats["by_status"], stats["ops_accepted"]) == ({"503": 1}, 0)


@pytest.mark.parametrize(("retry_after_s", "header"), [(2, "2"), (0.25, "0.25")])
def test_injected_429_carries_retry_after(
    client: httpx.Client, retry_after_s: float, header: str
) -> None:
    """With retry_after_s set, every injected 429 carries Retry-After; other errors do not."""
    set_faults(client, status_sequence=[429, 503], retry_after_s=retry_after_s)
    throttled, unavailable = send(client), send(client)
    assert (throttled.status_code, throttled.headers["retry-after"]) == (429, header)
    assert unavailable.status_code == 503
    assert "retry-after" not in unavailable.headers


def test_site_ids_scope_faults(client: httpx.Client, other: httpx.Client) -> None:
    """Faults limited to some sites leave every other site's requests alone."""
    set_faults(client, error_rate=1.0, error_status=500, site_ids=[OTHER_SITE])
    assert send(other).status_code == 500
    assert send(client).status_code == 200
    assert client.post("/api/v1/metrics", json={"delivery_id": "d"}).status_code == 200


def test_faults_apply_before_auth_and_to_unauthenticated_endpoints(
    sandbox_url: str, client: httpx.Client
) -> None:
    """Unscoped faults hit every Track API request, even ones without credentials."""
    set_faults(client, status_sequence=[503, 503])
    assert httpx.post(f"{sandbox_url}/api/v1/metrics", json={}).status_code == 503
    assert client.post("/api/v2/batch", json={}, auth=("x", "y")).status_code == 503


def test_latency_delays_every_answer(client: httpx.Client) -> None:
    """latency_ms holds each Track API answer back at least that long."""
    set_faults(client, latency_ms=200)
    started = time.monotonic()
    assert send(client).status_code == 200
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize(
    "faults",
    [
        {"error_rate": 1.5},
        {"error_rate": "often"},
        {"latency_ms": -1},
        {"latency_ms": True},
        {"status_sequence": [503, 99]},
        {"status_sequence": 503},
        {"site_ids": "dev-site"},
        {"seed": 1.5},
        {"error_status": 200},
        {"retry_after": 1},
    ],
)
def test_bad_fault_settings_are_400(client: httpx.Client, faults: dict[str, Any]) -> None:
    """Fault settings are validated; a bad one is refused and the old settings stay."""
    set_faults(client, latency_ms=3)
    response = client.post("/_sandbox/faults", json=faults)
    assert response.status_code == 400
    assert response.json()["error"]
    assert client.get("/_sandbox/faults").json()["latency_ms"] == 3


# --- poison ops -------------------------------------------------------------------------------


def test_poison_207_fails_only_that_item(client: httpx.Client) -> None:
    """sandbox_poison "207" makes its item an error; the others are accepted."""
    response = send(client, event(0), event(1, sandbox_poison="207"), event(2))
    assert response.status_code == 207
    (error,) = response.json()["errors"]
    assert (error["batch_index"], error["field"]) == (1, "attributes.sandbox_poison")
    assert [r["index"] for r in records(client)] == [0, 2]


def test_poison_off_accepts_poisoned_items(client: httpx.Client) -> None:
    """With "poison": false a poisoned item is accepted, as if upstream had fixed the cause."""
    set_faults(client, poison=False)
    response = send(client, event(0, sandbox_poison="207"), event(1, sandbox_poison="400"))
    assert response.status_code == 200
    assert [r["index"] for r in records(client)] == [0, 1]
    assert client.post("/_sandbox/faults", json={"poison": "no"}).status_code == 400


def test_poison_400_fails_the_whole_request(client: httpx.Client) -> None:
    """sandbox_poison "400" refuses the whole batch: no batch_index, nothing recorded."""
    response = send(client, event(0), event(1, sandbox_poison="400"), event(2))
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert "batch_index" not in error
    assert records(client) == []
    assert client.get("/_sandbox/stats").json()["ops_rejected"] == 3


def test_poison_hang_outlasts_the_client_timeout(client: httpx.Client) -> None:
    """sandbox_poison "hang" holds the answer for hang_s; the op is recorded on arrival."""
    set_faults(client, hang_s=0.5)
    with pytest.raises(httpx.ReadTimeout):
        send(client, event(0, sandbox_poison="hang"), timeout=0.1)
    assert [r["index"] for r in records(client)] == [0]
    deadline = time.monotonic() + 5
    while statuses_logged(client) != [200]:
        assert time.monotonic() < deadline, "the hung request never finished"
        time.sleep(0.02)


def test_poison_in_entity(client: httpx.Client) -> None:
    """On /api/v2/entity both "207" and "400" poison answer 400."""
    for poison in ("207", "400"):
        response = client.post("/api/v2/entity", json=event(0, sandbox_poison=poison))
        assert response.status_code == 400
        assert response.json()["errors"][0]["field"] == "attributes.sandbox_poison"
    assert records(client) == []


# --- credentials ------------------------------------------------------------------------------


def test_changing_credentials_takes_effect_at_once(client: httpx.Client) -> None:
    """A new key replaces the old one, null removes the site, and reset restores both."""
    body = client.post("/_sandbox/credentials", json={"site_id": SITE, "api_key": "rotated"})
    assert body.json() == {"site_ids": [SITE, OTHER_SITE]}
    assert send(client).status_code == 401
    assert send(client, auth=(SITE, "rotated")).status_code == 200
    client.post("/_sandbox/credentials", json={"site_id": SITE, "api_key": None})
    assert send(client, auth=(SITE, "rotated")).status_code == 401
    client.post("/_sandbox/reset").raise_for_status()
    assert send(client).status_code == 200


@pytest.mark.parametrize(
    "body", [{"site_id": SITE}, {"api_key": "k"}, {"site_id": "", "api_key": "k"}, []]
)
def test_bad_credentials_request_is_400(client: httpx.Client, body: Any) -> None:
    """Credentials updates need a site_id and an api_key (string or null)."""
    assert client.post("/_sandbox/credentials", json=body).status_code == 400
    assert send(client).status_code == 200
