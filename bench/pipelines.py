"""Pipelines figures, as ratios to the Track lane measured in the same run.

* bulk ingest: ``/v1/batch`` bodies of 100 calls (what customerio-cdp-analytics sends by
  default, ``upload_size=100``) against ``/api/v2/batch`` bodies of 100 ops, both ~500
  bytes per item, same api, same load generator, rounds alternating;
* drain: one solo worker empties a pre-filled backlog of Pipelines calls and, separately,
  one of Track ops of the same size, to a zero-latency sandbox;
* batch fill under that backlog: the mean ``/v1/batch`` body against the 500,000-byte limit,
  leaving out each shard's last body (the remainder once its backlog ran out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.drain import SHARDS, drain_with_worker, event_op, fill
from bench.figures import Figure
from bench.ingest import best_rounds, bulk_op
from bench.loadgen import LoadResult, build_request
from bench.stack import AUTH_HEADER, BenchStack, sandbox_requests
from service.jobs import Job, Lane
from service.lanes.pipelines.jobs import cdp_job, cdp_route

ITEMS_PER_BODY = 100
PAD = "p" * 330
CDP_BATCH_LIMIT = 500_000


def cdp_bulk_call(i: int) -> dict[str, Any]:
    """A Pipelines call the size of `bench.ingest.bulk_op` once stored."""
    return {
        "type": "track",
        "userId": f"person-{i % 5000}",
        "event": "bulk",
        "properties": {"n": i, "pad": PAD},
    }


def cdp_drain_call(i: int) -> dict[str, Any]:
    """A stored Pipelines call the size of `bench.drain.event_op` (~500 bytes)."""
    return {
        "type": "track",
        "userId": f"person-{i % 20_000}",
        "event": "drain",
        "messageId": f"01J{i:023d}",
        "timestamp": "2026-12-01T00:00:00.000Z",
        "properties": {"n": i, "pad": PAD[:318]},
    }


def _stored_cdp_job(call: dict[str, Any]) -> Job:
    return cdp_job(call, route=cdp_route(call))


def _bodies(port: int, path: str, make_item: Any) -> Any:
    headers = {"authorization": AUTH_HEADER, "content-type": "application/json"}
    bodies = [
        build_request(
            "POST",
            path,
            orjson.dumps({"batch": [make_item(k * ITEMS_PER_BODY + i) for i in range(100)]}),
            port=port,
            headers=headers,
        )
        for k in range(8)
    ]
    return lambda n: bodies[n % len(bodies)]


def _ingest(port: int, *, duration_s: float, rounds: int) -> dict[str, LoadResult]:
    """Each lane's best round of bulk ingest, against the same api."""
    loads = {
        "track": (port, _bodies(port, "/api/v2/batch", bulk_op)),
        "pipelines": (port, _bodies(port, "/v1/batch", cdp_bulk_call)),
    }
    return best_rounds(loads, connections=2, duration_s=duration_s, rounds=rounds)


def run(tmp: Path, *, quick: bool) -> list[Figure]:
    duration_s = 3.0 if quick else 10.0
    rounds = 2 if quick else 3
    total = 100_000 if quick else 500_000
    stack = BenchStack(tmp / "pipelines", shards=SHARDS)
    try:
        url = stack.start_sandbox(record="count")
        port = stack.start_api()
        ingest = _ingest(port, duration_s=duration_s, rounds=rounds)
        stack.client().flushdb()
        fill(stack, [event_op(i) for i in range(20_000)], total)
        track = drain_with_worker(stack, url, total, timeout_s=900)
        httpx.post(f"{url}/_sandbox/reset")
        fill(stack, [cdp_drain_call(i) for i in range(20_000)], total, _stored_cdp_job)
        cdp = drain_with_worker(stack, url, total, timeout_s=900, lane=Lane.PIPELINES)
        bodies = [r["body_bytes"] for r in sandbox_requests(url) if r["path"] == "/v1/batch"]
    finally:
        stack.close()
    assert cdp["delivered"] == total and track["delivered"] == total, (cdp, track)
    cdp_ingest = ingest["pipelines"].rate_per_s * ITEMS_PER_BODY
    track_ingest = ingest["track"].rate_per_s * ITEMS_PER_BODY
    # Each shard's backlog ends in one part-full body, not sent under backlog: the
    # smallest SHARDS bodies.
    under_backlog = sorted(bodies)[SHARDS:]
    mean_bytes = sum(under_backlog) / len(under_backlog)
    return [
        Figure(
            "Pipelines ingest bulk (/v1/batch, 100 calls per body)",
            cdp_ingest,
            "calls/s",
            "Track /api/v2/batch, 100 ops",
            track_ingest,
            ">= 0.8x Track",
            cdp_ingest >= 0.8 * track_ingest,
        ),
        Figure(
            f"Pipelines drain, 1 worker, 0 ms upstream, {total:,} calls",
            cdp["rate"],
            "calls/s",
            "Track lane drain",
            track["rate"],
            ">= 0.8x Track",
            cdp["rate"] >= 0.8 * track["rate"],
        ),
        Figure(
            f"Pipelines batch fill, mean of {len(under_backlog):,} bodies (~500 B calls)",
            mean_bytes,
            "B",
            "limit",
            CDP_BATCH_LIMIT,
            ">= 95%",
            mean_bytes >= 0.95 * CDP_BATCH_LIMIT,
            f"all {len(bodies)} bodies, tails included: {sum(bodies) / len(bodies):,.0f} B",
        ),
    ]
