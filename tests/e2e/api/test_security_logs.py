"""A full run at debug level, real processes: no secret in any log line."""

from __future__ import annotations

import base64
from collections.abc import Callable

import httpx
import pytest

from tests.support.processes import free_port, wait_http
from tests.support.stack import Stack

API_KEY = "sec-api-key-7Qx2vN"
INGEST_KEY = "sec-ingest-key-Lm4pR8"
ADMIN_KEY = "sec-admin-key-Zt9wK3"
SECRETS = (API_KEY, INGEST_KEY, ADMIN_KEY)


@pytest.fixture
def debug_stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(
        admin_keys=ADMIN_KEY,
        setup_pause_ms=1000,
        throttle_pause_ms=300,
        retry_base_ms=100,
        worker_metrics_port=free_port(),
    )


@pytest.mark.e2e
def test_full_run_at_debug_logs_no_secret(debug_stack: Stack) -> None:
    """api, worker, sweeper and sandbox at DEBUG, through success, 429, 5xx, 401 and bad
    requests: no configured key (raw or Basic-encoded) in any log or /metrics output."""
    from tests.support.processes import wait_until
    from tests.support.stack import API_KEY as STACK_API_KEY
    from tests.support.stack import INGEST_KEY as STACK_INGEST_KEY
    from tests.support.stack import SITE_ID

    stack = debug_stack
    stack.api = stack.start("api", ["api", "--log-level", "debug"])
    wait_http(f"{stack.api_url}/healthz")
    stack.start("sweeper", ["sweeper", "--log-level", "debug"])
    stack.start("worker0", ["worker", "--concurrency=1", "--pool=solo", "--log-level", "debug"])
    with stack.sandbox_client() as sandbox:
        sandbox.post(
            "/_sandbox/faults", json={"status_sequence": [429, 503, 401]}
        ).raise_for_status()
    auth = (SITE_ID, STACK_INGEST_KEY)
    with httpx.Client(base_url=stack.api_url, auth=auth, timeout=30) as api:
        for i in range(20):
            assert api.post(f"/api/v1/customers/s{i}/events", json={"name": "e"}).status_code == 200
        assert api.post("/api/v2/batch", json={"batch": [{"x": 1}]}).status_code == 400
        assert api.post("/api/v2/batch", content=b"{not json").status_code == 400
        denied = httpx.post(
            f"{stack.api_url}/api/v1/customers/1/events", auth=(SITE_ID, "wrong"), json={}
        )
        assert denied.status_code == 401
        admin = httpx.get(
            f"{stack.api_url}/admin/v1/workspaces",
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        )
        assert admin.status_code == 200
        metrics = api.get("/metrics")
        assert metrics.status_code == 200

    def delivered() -> bool:
        return len(stack.received()) >= 20

    wait_until(delivered, timeout_s=120, interval_s=0.5, what="the 20 events at the sandbox")
    worker_metrics_url = f"http://127.0.0.1:{stack.env['CIOQ_WORKER_METRICS_PORT']}/metrics"
    wait_http(worker_metrics_url)
    worker_metrics = httpx.get(worker_metrics_url)
    assert worker_metrics.status_code == 200 and "cioq_" in worker_metrics.text
    logs = {p.name: p.log() for p in stack.procs}
    logs["redis"] = stack.redis.proc.log() if stack.redis.proc else ""
    logs["api /metrics"] = metrics.text
    logs["worker /metrics"] = worker_metrics.text
    assert "DEBUG" in logs["api"] and "DEBUG" in logs["worker0"]
    secrets = [STACK_API_KEY, STACK_INGEST_KEY, ADMIN_KEY]
    encoded = [
        base64.b64encode(f"{SITE_ID}:{key}".encode()).decode()
        for key in (STACK_API_KEY, STACK_INGEST_KEY)
    ]
    leaks = {name: [s for s in (*secrets, *encoded) if s in text] for name, text in logs.items()}
    assert {name: found for name, found in leaks.items() if found} == {}
