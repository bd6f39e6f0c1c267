"""The worker's crash points, in real processes: a worker SIGKILLed right before its App
POST reaches Customer.io (held in front of the sandbox, never delivered) and right after
(the sandbox recorded the send, its answer not yet back). Either way the in-flight note
was written first; after a new worker and the sweeper recover, the send reached the
sandbox at most once and the job is final: delivered, or dead-lettered once as
``ambiguous``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from service import keys
from service.jobs import Lane
from tests.support.app_load import send_body, settle
from tests.support.holding_proxy import HoldingProxy
from tests.support.processes import wait_until
from tests.support.stack import INGEST_KEY, Stack

pytestmark = [pytest.mark.chaos]

#: The sandbox's "hang": it records the send, then withholds the answer this long.
HANG_S = 20


@pytest.fixture
def proxy() -> Iterator[HoldingProxy]:
    holder = HoldingProxy()
    yield holder
    holder.close()


def _send(stack: Stack) -> str:
    headers = {"Authorization": f"Bearer {INGEST_KEY}", "Prefer": "respond-async"}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as api:
        answer = api.post(
            "/v1/send/email", json=send_body("kill", 0), headers={"Idempotency-Key": "kill-0"}
        )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["job_id"])


def _app_sends(stack: Stack) -> int:
    return sum(1 for r in stack.received() if r["kind"] == "app")


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_worker_sigkilled_around_its_post_sends_at_most_once(
    when: str,
    make_stack: Callable[..., Stack],
    proxy: HoldingProxy,
) -> None:
    overrides = {"app_url": proxy.url} if when == "before" else {}
    # The worker sends it: the api's own sends are test_api_killed_around_the_post.py's.
    stack = make_stack(upstream_timeout_s=HANG_S / 2, shards=1, app_inline_sends=False, **overrides)
    if when == "after":
        with stack.sandbox_client() as sandbox:
            faults = {"hang_rate": 1.0, "hang_s": HANG_S, "seed": 1}
            sandbox.post("/_sandbox/app_faults", json=faults).raise_for_status()
    stack.start_api()
    worker = stack.start_worker(concurrency=1)
    job_id = _send(stack)
    if when == "before":
        wait_until(proxy.held.is_set, timeout_s=60, what="the POST held before the sandbox")
    else:
        wait_until(lambda: _app_sends(stack) == 1, timeout_s=60, what="the send recorded")
    note = stack.redis.client().exists(keys.shard_keys("default", 0, Lane.APP).inflight)
    worker.kill()
    stack.workers.remove(worker)
    assert note == 1  # the note was written before the POST went out
    if when == "before":
        proxy.release(("127.0.0.1", stack.sandbox_port))
    else:
        with stack.sandbox_client() as sandbox:
            sandbox.post("/_sandbox/app_faults", json={}).raise_for_status()
    stack.start_sweeper()
    stack.start_worker(concurrency=1)
    settled = settle(stack, "kill", [job_id], timeout_s=90)
    arrivals = settled.arrivals[0]
    state = settled.outcomes[job_id]["state"]
    print(f"\nkilled {when} the POST: {arrivals} arrival(s), state {state}")
    assert arrivals == (0 if when == "before" else 1)
    assert state in ("delivered", "ambiguous")
    assert len(settled.ambiguous_letters) == (1 if state == "ambiguous" else 0)
