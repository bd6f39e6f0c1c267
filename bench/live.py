"""Live traffic: mean ops per request under steady ingest, across shards vs shard by shard.

Steady ingest at 100, 1,000 and 10,000 ops/s for 500 people, 32 shards, linger 200 ms and
1,000 ms; one worker with 2 processes. The figure is the mean number of ops per request
Customer.io received, next to the ideal ``rate x linger`` (capped by the byte limit) and
to the design before (``CIOQ_PACK_ACROSS_SHARDS=false``: each shard packed and lingering
on its own), measured in the same run. The goal is ≥ 0.5 x ideal at every point.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from bench.figures import Figure
from bench.loadgen import build_request, run_load
from bench.stack import AUTH_HEADER, BenchStack, sandbox_stats, wait_for
from service.delivery.packing import ENVELOPE_BYTES

RATES_PER_S = (100, 1_000, 10_000)
LINGERS_MS = (200, 1_000)
PEOPLE = 500
MAX_BATCH_BYTES = 500_000
#: Ingest requests a second; each carries rate / this many ops.
REQUESTS_PER_S = 100


def _op(n: int) -> dict[str, object]:
    return {
        "type": "person",
        "action": "event",
        "identifiers": {"id": f"person-{n % PEOPLE}"},
        "name": "live",
        "attributes": {"n": n, "plan": "gold", "pad": "x" * 80},
    }


def _mean_ops(stack: BenchStack, url: str, port: int, rate: int, duration_s: float) -> float:
    """Ingest at `rate` ops/s for `duration_s`; mean ops per request Customer.io got."""
    per_request = max(1, rate // REQUESTS_PER_S)
    headers = {"authorization": AUTH_HEADER, "content-type": "application/json"}

    def make(n: int) -> bytes:
        ops = [_op(n * per_request + i) for i in range(per_request)]
        body = orjson.dumps({"batch": ops})
        return build_request("POST", "/api/v2/batch", body, port=port, headers=headers)

    before = sandbox_stats(url)
    load = asyncio.run(
        run_load(port, make, connections=32, duration_s=duration_s, rate_per_s=rate / per_request)
    )
    sent = load.requests * per_request
    wait_for(
        lambda: sandbox_stats(url)["ops_accepted"] - before["ops_accepted"] >= sent,
        timeout_s=120,
    )
    after = sandbox_stats(url)
    requests = int(after["requests"] - before["requests"])
    return int(after["ops_accepted"] - before["ops_accepted"]) / max(requests, 1)


def run(tmp: Path, *, quick: bool) -> list[Figure]:
    duration_s = 6.0 if quick else 20.0
    op_bytes = len(orjson.dumps(_op(10**6)))
    cap_ops = (MAX_BATCH_BYTES - ENVELOPE_BYTES) // (op_bytes + 1)
    found: dict[tuple[int, int, bool], float] = {}
    for linger_ms in LINGERS_MS:
        for across in (True, False):
            stack = BenchStack(
                tmp / f"live-{linger_ms}-{across}",
                linger_ms=linger_ms,
                pack_across_shards=str(across).lower(),
            )
            try:
                url = stack.start_sandbox(record="count")
                port = stack.start_api()
                stack.start_worker(concurrency=2, pool="prefork")
                stack.start_sweeper()
                # Warm up: the worker must be draining before a figure is taken, or the
                # first request carries everything queued while it started.
                _mean_ops(stack, url, port, REQUESTS_PER_S, 1.0)
                for rate in RATES_PER_S:
                    found[(linger_ms, rate, across)] = _mean_ops(stack, url, port, rate, duration_s)
            finally:
                stack.close()
    figures = []
    for linger_ms in LINGERS_MS:
        for rate in RATES_PER_S:
            ideal = min(rate * linger_ms / 1000, cap_ops)
            mean = found[(linger_ms, rate, True)]
            before = found[(linger_ms, rate, False)]
            figures.append(
                Figure(
                    f"live ops/request, {rate:,} ops/s, linger {linger_ms} ms",
                    mean,
                    "ops",
                    "per-shard design",
                    before,
                    ">= 0.5 x ideal",
                    mean >= 0.5 * ideal,
                    f"ideal rate x linger {ideal:,.0f} (byte cap {cap_ops:,}); "
                    f"{mean / ideal:.2f} x ideal; 32 shards, {PEOPLE} people, "
                    f"{duration_s:.0f} s",
                )
            )
    return figures
