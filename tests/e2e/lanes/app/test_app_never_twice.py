"""Never twice, real processes: 400 sends (1,000 in the soak) while the sandbox injects
ambiguous failures on 10% (answer withheld past the client timeout after recording, resets
after and before recording) and 503 with Retry-After on another 10%.

Every send arrives at most once; every send that did not arrive is in the dead letters
as ``ambiguous`` (an ambiguous one that did arrive is either confirmed by the message
lookup or dead-lettered too); the 503s were retried and arrived once.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.app_load import queue_sends, settle
from tests.support.scale import sized
from tests.support.stack import Stack

SENDS = sized(400, 1000)
FAULTS = {
    "hang_rate": 0.04,
    "reset_rate": 0.03,
    "reset_before_rate": 0.03,
    "error_rate": 0.10,
    "error_status": 503,
    "retry_after_s": 0.2,
    "hang_s": 3,
    "seed": 14,
}


@pytest.mark.load
def test_sends_arrive_at_most_once_under_ambiguous_failures(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(upstream_timeout_s=1, shards=16)
    stack.start_api()
    stack.start_sweeper()
    stack.start_worker(concurrency=2)
    stack.start_worker(concurrency=2)
    with stack.sandbox_client() as sandbox:
        sandbox.post("/_sandbox/app_faults", json=FAULTS).raise_for_status()
    job_ids = queue_sends(stack, "nt", SENDS)
    got = settle(stack, "nt", job_ids, timeout_s=240)

    # At most once: no send's marker arrived twice.
    assert max(got.arrivals.values()) == 1
    by_n = dict(enumerate(job_ids))
    states = {job_id: got.outcomes[job_id]["state"] for job_id in job_ids}
    for n, job_id in by_n.items():
        if got.arrivals[n] == 0:
            # Not arrived: dead-lettered as ambiguous, never "delivered".
            assert states[job_id] == "ambiguous", (n, got.outcomes[job_id])
            assert job_id in got.ambiguous_letters
        elif states[job_id] == "delivered":
            assert got.outcomes[job_id]["delivery_id"]
        else:
            # Arrived but the answer was lost, and the lookup could not confirm it.
            assert states[job_id] == "ambiguous" and job_id in got.ambiguous_letters
    for letter in got.ambiguous_letters.values():
        assert any(why in letter["message"] for why in ("may have acted", "died during the send"))
    assert set(states.values()) <= {"delivered", "ambiguous"}

    faults = [e["fault"] for e in got.send_log]
    retried = faults.count("status")
    # About 10% of the requests (~1.1 per send) were 503s: 44 of 400 sends, sd 6.3.
    assert retried >= SENDS // 20, faults
    # Each request the sandbox saw was one attempt of one job; a 503 costs one more.
    assert sum(o["attempts"] for o in got.outcomes.values()) == len(got.send_log)
    # Every 503 was followed by a resend: no job ended on a 503.
    assert all(o["status"] != 503 for o in got.outcomes.values())
    delivered = sum(1 for s in states.values() if s == "delivered")
    confirmed = sum(1 for o in got.outcomes.values() if o["state"] == "delivered" and o["detail"])
    print(
        f"\nnever-twice: {SENDS} sends, {len(got.send_log)} requests, {retried} 503s resent, "
        f"{delivered} delivered ({confirmed} confirmed by lookup), "
        f"{len(got.ambiguous_letters)} ambiguous in the DLQ, "
        f"{sum(got.arrivals.values())} arrived, max arrivals per send "
        f"{max(got.arrivals.values())}"
    )
