"""Late failures with real processes: identifies the sandbox accepts with 200 and fails a
moment later are found in its activity log by the sweeper's poller, each recorded once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from service import keys
from tests.support.processes import wait_until
from tests.support.stack import INGEST_KEY, SITE_ID, Stack
from tests.support.streams import stream_fields

PEOPLE = 60


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, late_poll_interval_s=1, late_poll_read_share=0.5)
    try:
        stack.start_api()
        stack.start_worker(concurrency=1)
        stack.start_sweeper()
        yield stack
    finally:
        stack.close()


def test_each_failure_after_a_200_is_recorded_once_by_the_sweepers_poller(stack: Stack) -> None:
    late = {"rate": 0.25, "min_delay_s": 0.5, "max_delay_s": 2.0, "seed": 25}
    with stack.sandbox_client() as sandbox:
        sandbox.post("/_sandbox/late_failures", json=late).raise_for_status()
        with httpx.Client(base_url=stack.api_url, auth=(SITE_ID, INGEST_KEY), timeout=30) as api:
            for n in range(PEOPLE):
                body = {"email": f"p{n}@example.com", "plan": "pro"}
                assert api.put(f"/api/v1/customers/p{n}", json=body).status_code == 200
        wait_until(lambda: stack.received_at_least(PEOPLE), timeout_s=120, what="all delivered")
        drawn = sandbox.get("/_sandbox/late_failures").json()["drawn"]
    assert 0 < drawn < PEOPLE  # a share failed, not all (seeded)
    client = stack.redis.client()

    def recorded() -> list[str]:
        rows = stream_fields(client, keys.late_failures("default"))
        return [orjson.loads(f[b"r"])["activity"]["customer_id"] for f in rows]

    def all_recorded() -> list[str] | None:
        found = recorded()
        return found if len(found) >= drawn else None

    found = wait_until(all_recorded, timeout_s=120, what=f"{drawn} late failures recorded")
    assert len(found) == len(set(found)) == drawn
    assert set(found) <= {f"p{n}" for n in range(PEOPLE)}

    def reads() -> list[dict[str, object]]:
        return [r for r in stack.requests() if r["path"] == "/v1/activities"]

    so_far = len(reads())
    # Two more walks of the three failure types: nothing is recorded twice.
    wait_until(lambda: len(reads()) >= so_far + 6, timeout_s=60, what="two more walks")
    assert recorded() == found
    assert all(r["status"] == 200 for r in reads())
    client.close()
