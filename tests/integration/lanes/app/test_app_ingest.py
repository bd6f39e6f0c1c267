"""App API ingest over real HTTP and Redis: the bounded wait for the outcome, 202 and the
status URL, ``Prefer: respond-async``, Idempotency-Key, and the read proxy's budget."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest
import redis

from sandbox import SandboxConfig, create_sandbox_app
from service.api.app import create_app
from service.config import Settings
from service.lanes.app.jobs import FIELD_APP
from service.lanes.app.outcomes import Outcome, Outcomes, State
from tests.support.http_server import serve_in_thread
from tests.support.streams import stream_fields
from tests.support.triggers import RecordingTriggers

HEADERS = {"Authorization": "Bearer dev-ingest-key"}
EMAIL = {"transactional_message_id": 1, "to": "a@example.com", "identifiers": {"id": "p1"}}


@pytest.fixture
def app_sandbox() -> Iterator[str]:
    with serve_in_thread(create_sandbox_app(SandboxConfig(app_rps=3))) as url:
        yield url


@pytest.fixture
def make_api(
    make_settings: Callable[..., Settings], triggers: RecordingTriggers, app_sandbox: str
) -> Iterator[Callable[..., httpx.Client]]:
    clients: list[Any] = []

    def build(**overrides: Any) -> httpx.Client:
        # The wait for a worker's outcome (`settle_soon` stands in for the worker); the
        # api's own sends are tests/integration/lanes/app/test_inline_sends.py's.
        values = {
            "app_api_key": "dev-app-key",
            "app_url": app_sandbox,
            "app_inline_sends": False,
            **overrides,
        }
        server = serve_in_thread(create_app(make_settings(**values), triggers=triggers))
        url = server.__enter__()
        client = httpx.Client(base_url=url, headers=HEADERS, timeout=15)
        clients.append((server, client))
        return client

    yield build
    for server, client in clients:
        client.close()
        server.__exit__(None, None, None)


def stored_jobs(client: redis.Redis) -> list[dict[str, Any]]:
    found = []
    for key in client.scan_iter(match="cioq:q:*"):
        for fields in stream_fields(client, key):
            if FIELD_APP in fields:
                found.append(orjson.loads(fields[FIELD_APP]))
    return found


def settle_soon(redis_url: str, settings: Settings, outcome: Callable[[str], Outcome]) -> None:
    """Stand in for a worker: once the job is stored, record its final outcome."""

    def run() -> None:
        client = redis.Redis.from_url(redis_url)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            jobs = stored_jobs(client)
            if jobs:
                Outcomes(client, settings.app).record("default", outcome(jobs[0]["id"]))
                return
            time.sleep(0.01)

    threading.Thread(target=run, daemon=True).start()


def test_send_waits_for_customerio_answer(
    make_api: Callable[..., httpx.Client], redis_url: str, make_settings: Callable[..., Settings]
) -> None:
    api = make_api(app_send_wait_ms=5000)
    cio = {"delivery_id": "d-1", "queued_at": 1}
    settle_soon(
        redis_url,
        make_settings(),
        lambda job_id: Outcome(job_id, State.DELIVERED, "send_email", 200, cio, attempts=1),
    )
    answer = api.post("/v1/send/email", json=EMAIL)
    assert answer.status_code == 200 and answer.json() == cio


def test_refusal_comes_back_as_customerio_sent_it(
    make_api: Callable[..., httpx.Client], redis_url: str, make_settings: Callable[..., Settings]
) -> None:
    api = make_api(app_send_wait_ms=5000)
    body = {"meta": {"error": "push not enabled"}}
    settle_soon(
        redis_url,
        make_settings(),
        lambda job_id: Outcome(job_id, State.REFUSED, "send_push", 403, body),
    )
    answer = api.post("/v1/send/push", json={**EMAIL, "to": "all"})
    assert answer.status_code == 403 and answer.json() == body


def test_no_outcome_in_time_is_202_with_a_status_url(
    make_api: Callable[..., httpx.Client], redis_client: redis.Redis
) -> None:
    api = make_api(app_send_wait_ms=200)
    started = time.monotonic()
    answer = api.post("/v1/send/sms", json={**EMAIL, "to": "+15555550100"})
    assert answer.status_code == 202 and 0.2 <= time.monotonic() - started < 5
    body = answer.json()
    assert body["state"] == "queued"
    [job] = stored_jobs(redis_client)
    assert job["id"] == body["job_id"] and job["path"] == "/v1/send/sms"
    status = api.get(body["status_url"])
    assert status.status_code == 200 and status.json()["state"] == "queued"
    other = httpx.get(body["status_url"], headers={"Authorization": "Bearer nope"})
    assert other.status_code == 401


def test_prefer_respond_async_answers_at_once(make_api: Callable[..., httpx.Client]) -> None:
    api = make_api(app_send_wait_ms=10_000)
    started = time.monotonic()
    answer = api.post("/v1/send/email", json=EMAIL, headers={"Prefer": "respond-async"})
    assert answer.status_code == 202 and time.monotonic() - started < 5


def test_ambiguous_outcome_is_202_never_a_5xx(
    make_api: Callable[..., httpx.Client], redis_url: str, make_settings: Callable[..., Settings]
) -> None:
    """A 5xx would make customerio-node resend: the second delivery the lane prevents."""
    api = make_api(app_send_wait_ms=5000)
    settle_soon(
        redis_url,
        make_settings(),
        lambda job_id: Outcome(job_id, State.AMBIGUOUS, "send_email", 502, detail="502"),
    )
    answer = api.post("/v1/send/email", json=EMAIL)
    assert answer.status_code == 202 and answer.json()["state"] == "ambiguous"


def test_idempotency_key_stores_one_job(
    make_api: Callable[..., httpx.Client], redis_client: redis.Redis
) -> None:
    api = make_api(app_send_wait_ms=0)
    headers = {"Idempotency-Key": "k-1"}
    first = api.post("/v1/send/email", json=EMAIL, headers=headers)
    again = api.post("/v1/send/email", json=EMAIL, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["job_id"] == again.json()["job_id"]
    assert len(stored_jobs(redis_client)) == 1


def test_trigger_and_alias_store_the_real_path(
    make_api: Callable[..., httpx.Client], redis_client: redis.Redis
) -> None:
    api = make_api(app_send_wait_ms=0)
    assert api.post("/v1/campaigns/12/triggers", json={"ids": [1]}).status_code == 202
    assert api.post("/v1/send/broadcast", json={"id": 12, "data": {"a": 1}}).status_code == 202
    jobs = sorted(stored_jobs(redis_client), key=lambda j: str(j["body"]))
    assert [j["path"] for j in jobs] == ["/v1/campaigns/12/triggers"] * 2
    assert [j["body"] for j in jobs] == [{"data": {"a": 1}}, {"ids": [1]}]
    assert {j["bucket"] for j in jobs} == {"12"} and {j["limit"] for j in jobs} == {"broadcast"}


def test_reads_are_proxied_with_the_app_key(
    make_api: Callable[..., httpx.Client], app_sandbox: str
) -> None:
    api = make_api(app_rps=100)
    answer = api.post("/v1/customers", json={"filter": {"and": []}}, params={"limit": 5})
    assert answer.status_code == 200 and answer.json() == {"identifiers": [], "ids": [], "next": ""}
    assert api.get("/v1/campaigns/3/metrics").json()["metric"]
    log = httpx.get(f"{app_sandbox}/_sandbox/requests").json()["records"]
    assert [(r["path"], r["site_id"], r["status"]) for r in log][:1] == [
        ("/v1/customers", "dev-app-key", 200)
    ]
    assert log[0]["query"] == "limit=5"


def test_reads_over_budget_wait_then_429_with_retry_after(
    make_api: Callable[..., httpx.Client], app_sandbox: str
) -> None:
    """At 2/s with a 600 ms wait, 5 reads at once: slots at 0 and 0.5 s, the rest refused.

    On a loaded machine the five may reach cioq spread out, and a late one then fits a later
    slot: so at least the first two are answered, at least one is refused, and only the
    answered ones reach Customer.io."""
    api = make_api(app_rps=2, app_rate_headroom=1.0, app_read_wait_ms=600)
    start = threading.Barrier(5)

    def read(_: int) -> httpx.Response:
        start.wait()
        return api.get("/v1/segments")

    with ThreadPoolExecutor(5) as pool:
        statuses = list(pool.map(read, range(5)))
    codes = [a.status_code for a in statuses]
    assert set(codes) <= {200, 429}
    assert codes.count(200) >= 2 and codes.count(429) >= 1, codes
    for refused in (a for a in statuses if a.status_code == 429):
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["errors"][0]["field"] == "rate_limit"
    log = httpx.get(f"{app_sandbox}/_sandbox/requests").json()["records"]
    assert len(log) == codes.count(200)


def test_upstream_429_on_a_read_holds_the_budget_and_is_tried_again(
    make_api: Callable[..., httpx.Client], app_sandbox: str
) -> None:
    """The sandbox allows 3 reads/s; cioq is told 100/s: the 4th read meets Customer.io's
    429, which said nothing was done, so after its Retry-After it goes again, once."""
    api = make_api(app_rps=100, app_read_wait_ms=3000)
    answers = [api.get("/v1/campaigns") for _ in range(4)]
    assert [a.status_code for a in answers] == [200] * 4
    log = httpx.get(f"{app_sandbox}/_sandbox/requests").json()["records"]
    assert [e["status"] for e in log] == [200, 200, 200, 429, 200]
