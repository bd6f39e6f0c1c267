"""Forget end to end: real redis-server, sandbox, workers and ``cioq forget`` processes.

The backlog is written with the store's own enqueue script in bulk (`fill_backlog`), as
ingest would have stored it, so the full size (1,000,000 jobs over 10,000 people and
10,000 dead letters under ``scripts/soak``) builds in seconds.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis

from tests.support.forget import email, fill_backlog, fill_letters, person_id, traces
from tests.support.load import received_by_person
from tests.support.processes import wait_until
from tests.support.scale import sized
from tests.support.stack import Stack

SHARDS = 32  # the default (CIOQ_SHARDS)


def _forget(stack: Stack, *identifiers: str) -> tuple[dict[str, Any], float]:
    """Run ``cioq forget``; its JSON answer and the command's wall time (s)."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "cioq", "forget", "default", *identifiers, "--json"],
        env=stack.env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    took_s = time.monotonic() - started
    assert done.returncode == 0, done.stderr.decode()
    return orjson.loads(done.stdout), took_s


def _accepted(stack: Stack) -> int:
    with stack.sandbox_client() as sandbox:
        return int(sandbox.get("/_sandbox/stats").json()["ops_accepted"])


def _first_arrivals(seqs: list[int]) -> list[int]:
    """The seqs in the order they first arrived (a SIGKILL may repeat a send, never
    reorder one)."""
    return list(dict.fromkeys(seqs))


@pytest.mark.load
def test_forget_in_a_big_backlog_leaves_no_trace_and_the_rest_arrives_once_in_order(
    make_stack: Callable[..., Stack],
) -> None:
    """100 jobs each for 200 people and 200 letters (10,000 people, 1,000,000 jobs and
    10,000 letters in the soak): one person forgotten, nothing of theirs left anywhere in
    Redis, everyone else's jobs delivered once, in order."""
    stack = make_stack(shards=SHARDS)
    client = redis.Redis.from_url(stack.env["CIOQ_REDIS_URL"])
    people = [person_id(i) for i in range(sized(200, 10_000))]
    per_person = sized(50, 100)
    total = fill_backlog(client, "default", people, per_person=per_person, shards=SHARDS)
    fill_letters(client, "default", people)
    gone = people[len(people) // 2]
    assert traces(client, [gone, email(gone)])
    # When the person is forgotten by id
    answer, wall_s = _forget(stack, gone)
    print(f"\nforget of 1 person in {total} jobs: {answer['took_ms']} ms, command {wall_s:.2f} s")
    assert answer["removed"]["pending_jobs"] == per_person
    assert answer["removed"]["dead_letters"] == 1
    # Then no key, value or stream entry of Redis names them
    assert traces(client, [gone, email(gone)]) == {}
    # And everyone else's jobs arrive, each once, in order
    stack.start_sweeper()
    stack.start_worker(concurrency=2)
    expected = total - per_person
    wait_until(
        lambda: _accepted(stack) >= expected,  # a counter: cheap to poll at any size
        timeout_s=sized(180, 1800),
        interval_s=1.0,
        what="every other person's jobs at the sandbox",
    )
    records = stack.received()
    got = received_by_person(records)
    assert gone not in got
    assert len(records) == expected
    assert all(got[p] == list(range(per_person)) for p in people if p != gone)


def test_forget_while_workers_drain_and_one_is_killed_sends_nothing_after_it_returns(
    make_stack: Callable[..., Stack],
) -> None:
    """A worker SIGKILLed while forget runs: forget waits out its lease, no job of the
    person arrives after forget returned, nobody else's is lost or reordered."""
    # Small requests, each slowed to half a second: the backlog is ~40 sends, so the drain
    # is still at it when the forget command (a second or two to start) and the kill land.
    stack = make_stack(shards=8, max_op_bytes=4096, max_batch_bytes=12_000)
    client = redis.Redis.from_url(stack.env["CIOQ_REDIS_URL"])
    people = [person_id(i) for i in range(60)]
    per_person = 50
    total = fill_backlog(client, "default", people, per_person=per_person, shards=8)
    gone = people[7]
    with stack.sandbox_client() as sandbox:
        # Slow sends: the drain is mid-backlog, leases held, when forget and the kill land.
        sandbox.post("/_sandbox/faults", json={"latency_ms": 500}).raise_for_status()
    stack.start_sweeper()
    worker = stack.start_worker(concurrency=2)
    stack.start_worker(concurrency=1)
    wait_until(lambda: len(stack.received()) > 0, timeout_s=60, what="draining to start")
    forgetting = subprocess.Popen(
        [sys.executable, "-m", "cioq", "forget", "default", gone, "--json"],
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    worker.kill()
    out, err = forgetting.communicate(timeout=120)
    assert forgetting.returncode == 0, err.decode()
    sent_before = received_by_person(stack.received()).get(gone, [])
    assert len(sent_before) < per_person, "the person's jobs were all sent before the forget"
    assert orjson.loads(out)["removed"]["pending_jobs"] + len(set(sent_before)) >= per_person
    with stack.sandbox_client() as sandbox:
        sandbox.post("/_sandbox/faults", json={"latency_ms": 0}).raise_for_status()
    others = {(p, s) for p in people if p != gone for s in range(per_person)}
    wait_until(
        lambda: (
            {(p, s) for p, seqs in received_by_person(stack.received()).items() for s in seqs}
            >= others
        ),
        timeout_s=180,
        interval_s=0.5,
        what="every other person's jobs after the kill",
    )
    got = received_by_person(stack.received())
    # Nothing of the person arrived after forget returned
    assert got.get(gone, []) == sent_before
    # Nobody else's job was lost, and first arrivals keep each person's order
    for person in people:
        if person != gone:
            assert _first_arrivals(got[person]) == list(range(per_person)), person
    assert traces(client, [gone, email(gone)]) == {}
    assert total == len(people) * per_person
