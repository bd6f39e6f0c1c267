"""Issue 27's shapes 1, 5 and 6, real processes: a backfill ingested through the API while
no worker runs, so the triggers it sent wait in the queues when the workers start, as after
a real outage; then live events arrive (`after_outage`). The stack, the drain's figures
and the wait are tests/support/fairness.py's.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass

import httpx

from service.jobs import Traffic
from service.triggers import BULK_QUEUE, DRAIN_QUEUE
from tests.support import fairness
from tests.support.live import live_events
from tests.support.processes import wait_until
from tests.support.stack import INGEST_KEY, SITE_ID, Stack

#: The outage shape's backfill: 1,000-op v2 batches of identifies over 5,000 people.
OUTAGE_BATCH_OPS = 1000
OUTAGE_PEOPLE = 5000
#: Live events start this long after the workers (the issue's shape).
OUTAGE_PROBES_AFTER_S = 2.0


@dataclass
class Outage:
    """Shape 1: what waited in the trigger queues when the workers came back, and the drain."""

    live_queue: int
    bulk_queue: int
    drained: fairness.Drained
    #: Each live probe's accept time (epoch s), by its seq.
    accepted: dict[int, float]


def _ingest(stack: Stack, ops: int, spread_s: float) -> None:
    """The backfill through the API (its triggers and all) while no worker runs, its
    batches started evenly over `spread_s` (0: all at once, 4 at a time)."""
    firsts = range(0, ops, OUTAGE_BATCH_OPS)
    step_s = spread_s / max(1, len(firsts) - 1)

    async def post_all() -> None:
        auth = (fairness.BULK_SITE, fairness.BULK_INGEST_KEY)
        async with httpx.AsyncClient(base_url=stack.api_url, auth=auth, timeout=60) as client:
            gate = asyncio.Semaphore(4)

            async def post(nth: int, first: int) -> None:
                # The shape's clock, not a wait for work: the ingest spans `spread_s`.
                await asyncio.sleep(nth * step_s)
                batch = [
                    {
                        "type": "person",
                        "action": "identify",
                        "identifiers": {"id": f"b{n % OUTAGE_PEOPLE}"},
                        "attributes": {"n": n, "plan": "imported", "source": "outage"},
                    }
                    for n in range(first, min(first + OUTAGE_BATCH_OPS, ops))
                ]
                async with gate:
                    r = await client.post("/api/v2/batch", json={"batch": batch})
                    r.raise_for_status()

            await asyncio.gather(*(post(nth, first) for nth, first in enumerate(firsts)))

    asyncio.run(post_all())


def _queue_lengths(stack: Stack) -> tuple[int, int]:
    client = stack.redis.client()
    lengths = int(client.llen(DRAIN_QUEUE)), int(client.llen(BULK_QUEUE))
    client.close()
    return lengths


def after_outage(
    stack: Stack,
    *,
    ops: int,
    probes: int,
    kill_one: bool = False,
    ingest_spread_s: float = 0,
    enough_s: float | None = None,
) -> Outage:
    """Shape 1 on a fresh stack from `start(stack, sweeper=False)`: the workers are down
    while workspace `bulk` ingests `ops` through the API; then one worker (2 processes) and
    the sweeper start, and `OUTAGE_PROBES_AFTER_S` later `probes` live events arrive at
    5/s (none when `probes` is 0: the backfill's rate alone).

    `ingest_spread_s` spreads the ingest's batches over that long: an ingest longer than
    a trigger marker lives (1 s) is what once left a live trigger per shard and second.

    `kill_one` (shape 6): two workers start, and one is SIGKILLed once a third of the
    backfill is through, so its leases expire while the live events flow.
    """
    _ingest(stack, ops, ingest_spread_s)
    live_queue, bulk_queue = _queue_lengths(stack)
    with stack.sandbox_client() as sandbox:
        sandbox.post("/_sandbox/reset").raise_for_status()
    fairness.latency(stack)
    sent = itertools.count()
    accepted: dict[int, float] = {}

    def probe() -> None:
        accepted.update(
            asyncio.run(
                live_events(
                    stack.api_url,
                    (SITE_ID, INGEST_KEY),
                    rate_per_s=5,
                    keep_going=lambda: next(sent) < probes,
                )
            )
        )

    workers = [stack.start_worker(concurrency=2) for _ in range(2 if kill_one else 1)]
    stack.start_sweeper()
    started = time.monotonic()
    # A loaded machine takes seconds to boot a worker; the shape starts when it consumes.
    wait_until(
        lambda: all(" ready." in w.log() for w in workers), timeout_s=120, what="workers ready"
    )
    prober = threading.Thread(target=probe)
    if probes:
        # The shape's clock, not a wait for work: the live traffic starts 2 s after the workers.
        time.sleep(OUTAGE_PROBES_AFTER_S)
        prober.start()
    try:
        if kill_one:
            wait_until(
                lambda: fairness.backlog(stack, "bulk", Traffic.LIVE) < ops * 2 // 3,
                timeout_s=max(600, ops / 200),
                interval_s=0.2,
                what="a third of the backfill drained",
            )
            workers[0].kill()
            stack.workers.remove(workers[0])
        watch = fairness.Watch(
            stack, lambda: fairness.backlog(stack, "bulk", Traffic.LIVE), accepted, probes, enough_s
        )
        wait_until(
            watch, timeout_s=max(600, ops / 200), interval_s=0.5, what="the backfill drained"
        )
        took_s = time.monotonic() - started
    finally:
        if probes:
            prober.join()
    if probes:
        wait_until(
            lambda: fairness.probes_delivered(stack, accepted),
            timeout_s=60,
            what="every live probe delivered",
        )
    stopping = workers[1:] if kill_one else workers
    for worker in stopping:
        worker.terminate()
    for worker in stopping:
        worker.stop()
        stack.workers.remove(worker)
    rate = fairness.backfill_rate(stack, fairness.BULK_SITE)
    drained = fairness.timed(stack, rate, took_s, accepted, fairness.BULK_SITE, watch.left)
    return Outage(live_queue, bulk_queue, drained, accepted)
