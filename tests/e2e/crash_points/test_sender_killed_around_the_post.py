"""The App send's crash points, in real processes: its sender SIGKILLed right before its
POST reaches Customer.io (held in front of the sandbox, never delivered) and right after
(the sandbox recorded the send, its answer not yet back). The sender is a worker's drain,
or the api sending the job itself (`service.lanes.app.inline`). Either way the in-flight
note was written first; after a worker and the sweeper recover (for the api, once its
lease is over), the send reached the sandbox at most once and the job is final:
delivered, or dead-lettered once as ``ambiguous``.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from typing import Any

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
#: Short, so the dead api's lease is over soon (its send is cut off long before).
LEASE_MS = 3000


@pytest.fixture
def proxy() -> Iterator[HoldingProxy]:
    holder = HoldingProxy()
    yield holder
    holder.close()


def _send(stack: Stack, tag: str = "kill") -> str:
    """A keyed send whose producer does not wait (the api, when it sends, sends it in the
    background)."""
    headers = {"Authorization": f"Bearer {INGEST_KEY}", "Prefer": "respond-async"}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as api:
        answer = api.post(
            "/v1/send/email", json=send_body(tag, 0), headers={"Idempotency-Key": f"{tag}-0"}
        )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["job_id"])


def _app_sends(stack: Stack) -> int:
    return sum(1 for r in stack.received() if r["kind"] == "app")


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("sender", ["worker", "api"])
def test_a_sender_sigkilled_around_its_post_sends_at_most_once(
    sender: str,
    when: str,
    make_stack: Callable[..., Stack],
    proxy: HoldingProxy,
) -> None:
    overrides: dict[str, Any] = {"app_url": proxy.url} if when == "before" else {}
    if sender == "api":  # its lease short, so a worker takes over from the dead api soon
        overrides.update(lease_ms=LEASE_MS, allow_short_lease=True)
    else:
        overrides.update(app_inline_sends=False)
    stack = make_stack(upstream_timeout_s=HANG_S / 2, shards=1, **overrides)
    if when == "after":
        with stack.sandbox_client() as sandbox:
            faults = {"hang_rate": 1.0, "hang_s": HANG_S, "seed": 1}
            sandbox.post("/_sandbox/app_faults", json=faults).raise_for_status()
    api = stack.start_api()
    worker = stack.start_worker(concurrency=1) if sender == "worker" else None
    job_id = _send(stack)
    if when == "before":
        wait_until(proxy.held.is_set, timeout_s=60, what="the POST held before the sandbox")
    else:
        wait_until(lambda: _app_sends(stack) == 1, timeout_s=60, what="the send recorded")
    note = stack.redis.client().hgetall(keys.shard_keys("default", 0, Lane.APP).inflight)
    if worker is not None:
        worker.kill()
        stack.workers.remove(worker)
    else:
        api.kill()
    assert note.get(b"head")  # the note was written before the POST went out
    if when == "before":
        proxy.release(("127.0.0.1", stack.sandbox_port))
    else:
        with stack.sandbox_client() as sandbox:
            sandbox.post("/_sandbox/app_faults", json={}).raise_for_status()
    if worker is None:
        stack.start_api()
    stack.start_sweeper()
    stack.start_worker(concurrency=1)
    settled = settle(stack, "kill", [job_id], timeout_s=90)
    arrivals = settled.arrivals[0]
    state = settled.outcomes[job_id]["state"]
    print(f"\n{sender} killed {when} the POST: {arrivals} arrival(s), state {state}")
    assert arrivals == (0 if when == "before" else 1)
    assert state in ("delivered", "ambiguous")
    assert len(settled.ambiguous_letters) == (1 if state == "ambiguous" else 0)


def test_the_api_stopped_during_its_own_post_finishes_it(make_stack: Callable[..., Stack]) -> None:
    """A rollout's SIGTERM: the api lets its sends under way end (within the upstream
    timeout) before it exits, so none is left cut off as ambiguous."""
    stack = make_stack(upstream_timeout_s=HANG_S / 2, shards=1)
    with stack.sandbox_client() as sandbox:
        faults = {"hang_rate": 1.0, "hang_s": 2, "seed": 1}  # answers after 2 s
        sandbox.post("/_sandbox/app_faults", json=faults).raise_for_status()
    api = stack.start_api()
    job_id = _send(stack, "apistop")
    wait_until(lambda: _app_sends(stack) == 1, timeout_s=60, what="the send recorded")
    # It waits for the answer, then exits (uvicorn re-raises the SIGTERM it handled); a
    # stop past the timeout would be a SIGKILL.
    assert api.stop(timeout_s=HANG_S) == -signal.SIGTERM
    shard = keys.shard_keys("default", 0, Lane.APP)
    client = stack.redis.client()
    assert client.xlen(shard.stream) == 0 and not client.exists(shard.lease)
    stack.start_api()
    settled = settle(stack, "apistop", [job_id], timeout_s=30)
    assert settled.arrivals[0] == 1
    assert settled.outcomes[job_id]["state"] == "delivered"
    assert not settled.ambiguous_letters
