"""Issue 27's shape 7, real processes: a Pipelines backfill drains in the default workspace
while the same workspace's Track live events (5/s) and App sends (2/s) flow. The Track
events' accept -> upstream latencies and each App send's answer (status and how long the
producer waited for it) are what the fairness test checks and bench/fairness.py reports.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass

import httpx

from service import keys
from service.jobs import Lane, shard_for
from service.lanes.pipelines.jobs import cdp_job, cdp_route
from tests.support import fairness
from tests.support.live import live_events
from tests.support.processes import wait_until
from tests.support.stack import INGEST_KEY, SITE_ID, Stack

SENDS_PER_S = 2


@dataclass
class Lanes:
    """The Pipelines backfill's drain (its timeline against the Track probes) and the App
    sends' answers: (status, seconds the producer waited) in send order."""

    drained: fairness.Drained
    app_answers: list[tuple[int, float]]


def _fill_pipelines(stack: Stack, ops: int) -> None:
    """Pipelines identify calls, written straight into the default workspace's streams."""
    client = fairness.store(stack)
    pipe = client.pipeline(transaction=False)
    for n in range(ops):
        call = {
            "type": "identify",
            "userId": f"p{n % 5000}",
            "traits": {"n": n, "plan": "imported"},
            "messageId": f"backfill-{n}",
            "timestamp": "2026-01-01T00:00:00.000Z",
        }
        job = cdp_job(call, route=cdp_route(call))
        shard = keys.shard_keys(
            "default", shard_for("default", job.route, fairness.SHARDS), lane=Lane.PIPELINES
        )
        pipe.xadd(shard.stream, {job.field: job.payload})
        if n % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    client.close()


def _pipelines_started(stack: Stack) -> bool:
    with stack.sandbox_client() as sandbox:
        return int(sandbox.get("/_sandbox/stats").json()["cdp_accepted"]) > 0


def _pipelines_backlog(stack: Stack) -> int:
    client = fairness.store(stack)
    pipe = client.pipeline(transaction=False)
    for shard in range(fairness.SHARDS):
        pipe.xlen(keys.shard_keys("default", shard, lane=Lane.PIPELINES).stream)
    total = sum(int(n) for n in pipe.execute())
    client.close()
    return total


async def _app_sends(api_url: str, count: int) -> list[tuple[int, float]]:
    """`count` transactional emails at `SENDS_PER_S`; each one's status and wait."""
    answers: list[tuple[int, float]] = [(0, 0.0)] * count
    headers = {"Authorization": f"Bearer {INGEST_KEY}"}
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=60) as client:

        async def one(n: int) -> None:
            await asyncio.sleep(max(0.0, started + n / SENDS_PER_S - time.monotonic()))
            sent = time.monotonic()
            r = await client.post(
                "/v1/send/email",
                json={
                    "transactional_message_id": 1,
                    "to": f"app-{n}@example.com",
                    "identifiers": {"id": f"app-{n}"},
                },
            )
            answers[n] = (r.status_code, time.monotonic() - sent)

        await asyncio.gather(*(one(n) for n in range(count)))
    return answers


def pipelines_backfill(
    stack: Stack, *, ops: int, probes: int, sends: int, enough_s: float | None = None
) -> Lanes:
    """Drain `ops` Pipelines calls of the default workspace with a fresh worker (2
    processes) while `probes` Track live events and `sends` App sends arrive, from when
    the backfill flows. `stack` comes from `fairness.start`."""
    _fill_pipelines(stack, ops)
    with stack.sandbox_client() as sandbox:
        sandbox.post("/_sandbox/reset").raise_for_status()
    fairness.latency(stack)
    sent = itertools.count()
    accepted: dict[int, float] = {}
    answers: list[tuple[int, float]] = []

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

    def send() -> None:
        answers.extend(asyncio.run(_app_sends(stack.api_url, sends)))

    threads = [threading.Thread(target=probe), threading.Thread(target=send)]
    worker = stack.start_worker(concurrency=2)
    started = time.monotonic()
    wait_until(lambda: _pipelines_started(stack), timeout_s=180, what="the backfill flowing")
    for thread in threads:
        thread.start()
    try:
        watch = fairness.Watch(stack, lambda: _pipelines_backlog(stack), accepted, probes, enough_s)
        wait_until(
            watch,
            timeout_s=max(600, ops / 200),
            interval_s=0.5,
            what="the Pipelines backfill drained",
        )
        took_s = time.monotonic() - started
    finally:
        for thread in threads:
            thread.join()
    wait_until(
        lambda: fairness.probes_delivered(stack, accepted),
        timeout_s=60,
        what="every live probe delivered",
    )
    worker.stop()
    stack.workers.remove(worker)
    records = stack.received()
    backfill_at = [r["received_at"] for r in records if r["kind"] == "cdp"]
    span_s = max(backfill_at) - min(backfill_at)
    rate = len(backfill_at) / span_s
    drained = fairness.timed(stack, rate, took_s, accepted, SITE_ID, watch.left)
    drained.backfill_last_at = max(backfill_at)
    return Lanes(drained, answers)
