"""Live traffic beside a backfill, real processes: the scenario the fairness test checks for
stalls and bench/fairness.py measures. One worker with 2 processes, upstream latency 50 ms,
linger 200 ms, 32 shards; a backfill written straight into the streams (in one workspace,
or split over ten), then drained while 5 live events a second arrive (`drain`). The
outage shapes (1, 5, 6) are in tests/support/fairness_outage.py, the Pipelines one (7) in
tests/support/fairness_lanes.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from service import keys
from service.jobs import Lane, Traffic, shard_for
from service.lanes.track.jobs import v2_job
from tests.support.live import latencies_ms, live_events, percentile
from tests.support.processes import wait_until
from tests.support.stack import INGEST_KEY, SITE_ID, Stack

SHARDS = 32
LINGER_MS = 200
BULK_SITE, BULK_KEY = "bulk-site", "bulk-api-key"
BULK_INGEST_KEY = "bulk-ingest-key"


@dataclass
class Drained:
    """One drain of the backfill: its rate at the sandbox and the live probes' latencies."""

    rate_ops_per_s: float
    took_s: float
    latencies_ms: list[float]
    #: Epoch seconds: the first live probe's accept, the last probe's arrival upstream, the
    #: backfill's last op's arrival upstream (0 without probes).
    first_accept_at: float = 0.0
    last_probe_at: float = 0.0
    backfill_last_at: float = 0.0
    #: Each live probe's accept time (epoch s), by its seq.
    accepted: dict[int, float] = field(default_factory=dict)
    #: Ops still waiting when the wait stopped (0: the backfill drained; see `Watch`).
    backlog_left: int = 0

    @property
    def backfill_after_probes_s(self) -> float:
        """How long the backfill still flowed after the last live probe arrived (negative:
        it had drained before)."""
        return self.backfill_last_at - self.last_probe_at

    @property
    def backfill_after_first_accept_s(self) -> float:
        """How long the backfill flowed after the first probe was accepted: a probe queued
        behind the whole backlog would have waited about this long."""
        return self.backfill_last_at - self.first_accept_at

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 0.5)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 0.99)


#: The suite's request cap: about 20 backfill ops a request instead of ~4,000, so a short
#: backfill is hundreds of 50 ms sends and outlasts the stall guard however fast the
#: machine (its drain time has a floor of sends x 50 ms / processes), at little CPU a send.
SHORT_REQUEST_BYTES = 2_400


def settings(*, request_bytes: int | None = None) -> dict[str, Any]:
    """The Stack settings of the scenario; `request_bytes` caps the Track and Pipelines
    request bodies the drain sends (default: Customer.io's 500 KB)."""
    chosen: dict[str, Any] = {
        "sites": {BULK_SITE: BULK_KEY},
        "shards": SHARDS,
        "linger_ms": LINGER_MS,
    }
    if request_bytes is not None:
        chosen |= {
            "max_batch_bytes": request_bytes,
            "max_op_bytes": 1024,
            "cdp_max_batch_bytes": request_bytes,
            "cdp_max_call_bytes": 1024,
        }
    return chosen


def store(stack: Stack) -> redis.Redis | redis.RedisCluster:
    """A client of the stack's store: its own Redis, or the cluster it was built with."""
    if stack.env.get("CIOQ_REDIS_CLUSTER") == "true":
        return redis.RedisCluster.from_url(stack.env["CIOQ_REDIS_URL"])
    return stack.redis.client()


def backfill_workspaces(count: int) -> tuple[str, ...]:
    """The names of `count` backfill workspaces: `bulk`, then `bulk-1`, `bulk-2`..."""
    return ("bulk", *(f"bulk-{n}" for n in range(1, count)))


def start(stack: Stack, *, sweeper: bool = True, backfills: int = 1) -> Stack:
    """A stack built with `settings()`, with `backfills` more workspaces (`bulk`, then
    `bulk-1`...: one Customer.io site for all), api (and sweeper) up."""
    stack.env["CIOQ_WORKSPACES"] = json.dumps(
        [
            {
                "name": name,
                "site_id": BULK_SITE,
                "api_key": BULK_KEY,
                "track_url": stack.sandbox_url,
                "ingest_keys": BULK_INGEST_KEY if name == "bulk" else f"{name}-ingest-key",
            }
            for name in backfill_workspaces(backfills)
        ]
    )
    stack.start_api()
    if sweeper:
        stack.start_sweeper()
    latency(stack)
    return stack


def latency(stack: Stack) -> None:
    with stack.sandbox_client() as sandbox:
        sandbox.post("/_sandbox/faults", json={"latency_ms": 50}).raise_for_status()


def _fill(stack: Stack, workspace: str, traffic: Traffic, ops: int) -> None:
    """The backfill, written straight into the workspace's streams (no worker running)."""
    client = store(stack)
    pipe = client.pipeline(transaction=False)
    for n in range(ops):
        op = {
            "type": "person",
            "action": "identify",
            "identifiers": {"id": f"b{n % 20_000}"},
            "attributes": {"n": n, "plan": "imported"},
        }
        job = v2_job(op)
        shard = keys.shard_keys(
            workspace, shard_for(workspace, job.route, SHARDS), Lane.TRACK, traffic=traffic
        )
        pipe.xadd(shard.stream, {job.field: job.payload})
        if n % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    client.close()


def backlog(stack: Stack, workspace: str, traffic: Traffic) -> int:
    client = store(stack)
    pipe = client.pipeline(transaction=False)
    for shard in range(SHARDS):
        pipe.xlen(keys.shard_keys(workspace, shard, Lane.TRACK, traffic=traffic).stream)
    total = sum(int(n) for n in pipe.execute())
    client.close()
    return total


#: A request with this many ops or more is the backfill's (live probes go a few at a time).
BACKFILL_REQUEST_OPS = 5


def backfill_rate(stack: Stack, site: str) -> float:
    """Backfill ops a second, from the sandbox's log of its requests (big batches only)."""
    log = [
        r
        for r in stack.requests()
        if r["site_id"] == site and r["op_count"] >= BACKFILL_REQUEST_OPS
    ]
    span_s = log[-1]["received_at"] - log[0]["received_at"]
    return float(sum(r["op_count"] for r in log[1:]) / span_s)


def timed(
    stack: Stack,
    rate_ops_per_s: float,
    took_s: float,
    accepted: dict[int, float],
    site: str,
    backlog_left: int = 0,
) -> Drained:
    """The drain's figures, with when the probes and the backfill reached the sandbox."""
    records = stack.received_from(SITE_ID)
    probes = [r for r in records if r["op"].get("name") == "live-probe"]
    if site == SITE_ID:
        backfill_at = [r["received_at"] for r in records if r["op"].get("name") != "live-probe"]
    else:
        backfill_at = [r["received_at"] for r in stack.requests() if r["site_id"] == site]
    return Drained(
        rate_ops_per_s,
        took_s,
        latencies_ms(records, accepted),
        first_accept_at=min(accepted.values(), default=0.0),
        last_probe_at=max((r["received_at"] for r in probes), default=0.0),
        backfill_last_at=max(backfill_at, default=0.0),
        accepted=accepted,
        backlog_left=backlog_left,
    )


def probes_delivered(stack: Stack, accepted: dict[int, float]) -> bool:
    """Whether every accepted live probe has reached the sandbox (a repeat counts once)."""
    arrived = {
        int(r["op"]["attributes"]["seq"])
        for r in stack.received_from(SITE_ID)
        if r["op"].get("name") == "live-probe"
    }
    return arrived >= set(accepted)


def backfill_started(stack: Stack) -> bool:
    with stack.sandbox_client() as sandbox:
        return int(sandbox.get("/_sandbox/stats").json()["ops_accepted"]) > 0


class Watch:
    """The wait for a drain with probes: until the backlog is empty or, with `enough_s`,
    until every probe has arrived and the backfill has flowed `enough_s` past the first
    probe's accept (all a live-first check needs: the rest of the drain shows nothing
    more, and on a loaded machine takes longest). `left` is what was still waiting."""

    def __init__(
        self,
        stack: Stack,
        backlog: Callable[[], int],
        accepted: dict[int, float],
        probes: int | None,
        enough_s: float | None,
    ) -> None:
        self.stack, self.backlog, self.accepted = stack, backlog, accepted
        self.probes, self.enough_s = probes, enough_s
        self.left = -1

    def __call__(self) -> bool:
        # The probes first, the backlog after: a backlog left then was there when the last
        # probe had arrived. (`accepted` fills when the prober is through.)
        enough = (
            self.enough_s is not None
            and bool(self.probes)
            and len(self.accepted) >= (self.probes or 0)
            and time.time() - min(self.accepted.values()) > self.enough_s
            and probes_delivered(self.stack, self.accepted)
        )
        self.left = self.backlog()
        return self.left == 0 or enough


def drain(
    stack: Stack,
    workspace: str | tuple[str, ...],
    traffic: Traffic,
    *,
    ops: int,
    live: bool,
    probes: int | None = None,
    enough_s: float | None = None,
) -> Drained:
    """Drain the backfill (`ops` in each of the workspaces) with a fresh worker; with
    `live`, while probes arrive (5/s from when the backfill flows: `probes` of them, or
    until it has drained). `enough_s`: see `Watch`."""
    workspaces = (workspace,) if isinstance(workspace, str) else workspace
    for name in workspaces:
        _fill(stack, name, traffic, ops)
    with stack.sandbox_client() as sandbox:
        sandbox.post("/_sandbox/reset").raise_for_status()
    latency(stack)
    done = threading.Event()
    sent = itertools.count()
    accepted: dict[int, float] = {}

    def probe() -> None:
        accepted.update(
            asyncio.run(
                live_events(
                    stack.api_url,
                    (SITE_ID, INGEST_KEY),
                    rate_per_s=5,
                    keep_going=lambda: not done.is_set() and next(sent) != probes,
                )
            )
        )

    prober = threading.Thread(target=probe)
    worker = stack.start_worker(concurrency=2)
    started = time.monotonic()
    if live:
        # Probes start once the backfill is flowing (not while the worker boots).
        wait_until(lambda: backfill_started(stack), timeout_s=180, what="the backfill flowing")
        prober.start()
    try:
        wait_until(
            watch := Watch(
                stack,
                lambda: sum(backlog(stack, name, traffic) for name in workspaces),
                accepted,
                probes,
                enough_s,
            ),
            timeout_s=max(600, len(workspaces) * ops / 200),
            interval_s=0.5,
            what="the backfill drained",
        )
    finally:
        done.set()
        if live:
            prober.join()

    took_s = time.monotonic() - started
    if live:
        wait_until(
            lambda: probes_delivered(stack, accepted),
            timeout_s=60,
            what="every live probe delivered",
        )
    worker.stop()
    stack.workers.remove(worker)

    site = BULK_SITE if workspaces[0].startswith("bulk") else SITE_ID
    return timed(stack, backfill_rate(stack, site), took_s, accepted, site, watch.left)


def probes_once_in_order(
    records: list[dict[str, Any]], accepted: dict[int, float], *, after_a_kill: bool = False
) -> None:
    """Every accepted live probe reached Customer.io once, each person's in order.

    `after_a_kill`: a worker was SIGKILLed, and a request it had sent is sent again by the
    shard's next holder (Track delivers at least once across a crash): a probe may then
    arrive twice, with the same op id both times, so Customer.io counts it once; none may
    be lost, and each person's first arrivals keep their order."""
    probes = [r for r in records if r["op"].get("name") == "live-probe"]
    seqs = [int(r["op"]["attributes"]["seq"]) for r in probes]
    missing = sorted(set(accepted) - set(seqs))
    repeated = {
        seq: [r["seq"] for r in probes if int(r["op"]["attributes"]["seq"]) == seq]
        for seq, n in Counter(seqs).items()
        if n > 1
    }
    assert not missing, f"live probes lost: {missing} (repeated, probe: its requests: {repeated})"
    if after_a_kill:
        for seq in repeated:
            ids = {r["op"].get("id") for r in probes if int(r["op"]["attributes"]["seq"]) == seq}
            assert len(ids) == 1 and None not in ids, f"probe {seq} was resent as {ids}"
        seqs = list(dict.fromkeys(seqs))  # first arrivals
    else:
        assert not repeated, f"live probes sent twice (probe: its requests): {repeated}"
    by_person: dict[int, list[int]] = {}
    for seq in seqs:
        by_person.setdefault(seq % 50, []).append(seq)
    for person, order in by_person.items():
        assert order == sorted(order), f"live-{person}'s events arrived out of order: {order}"
