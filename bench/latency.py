"""End-to-end latency: accept (the api's 2xx) to Customer.io's 200, at half of capacity.

First a closed-loop producer finds the whole stack's capacity for single-op requests
(api, worker, sweeper, sandbox and Redis all on this machine): events accepted over the
time until the last was delivered. Then a paced producer sends at half that rate. Every
event carries its sequence number, and the sandbox (recording in full) says when each op
reached it. The budget is linger + 250 ms.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.figures import Figure
from bench.loadgen import build_request, run_load
from bench.stack import AUTH_HEADER, BenchStack, sandbox_stats

LINGER_MS = 1000


def _received(url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    with httpx.Client(base_url=url, timeout=60) as client:
        while True:
            page = client.get("/_sandbox/received", params={"after": after, "limit": 10_000})
            records = page.json()["records"]
            if not records:
                return out
            out.extend(records)
            after = page.json()["next"]


def run(tmp: Path, *, quick: bool, capacity_per_s: float | None = None) -> list[Figure]:
    """p50/p99 at half of `capacity_per_s`, or of the whole stack's rate measured first."""
    duration_s = 8.0 if quick else 30.0
    stack = BenchStack(tmp / "latency", linger_ms=LINGER_MS)
    acked: dict[int, float] = {}
    try:
        url = stack.start_sandbox(record="full")
        port = stack.start_api()
        stack.start_worker(concurrency=2, pool="prefork")
        stack.start_sweeper()
        headers = {"authorization": AUTH_HEADER, "content-type": "application/json"}

        def make(n: int) -> bytes:
            body = orjson.dumps({"name": "latency", "data": {"seq": n}})
            path = f"/api/v1/customers/person-{n % 2000}/events"
            return build_request("POST", path, body, port=port, headers=headers)

        def on_ok(n: int, at_s: float) -> None:
            acked[n] = at_s

        if capacity_per_s is None:
            # The whole stack's capacity: api, worker, sweeper and sandbox share the machine.
            # End to end: events accepted / time until the last of them was delivered.
            started = time.monotonic()
            probe = asyncio.run(run_load(port, make, connections=16, duration_s=duration_s / 2))
            deadline = time.monotonic() + 120
            while sandbox_stats(url)["ops_accepted"] < probe.requests:
                if time.monotonic() > deadline:
                    raise TimeoutError("the capacity probe's events were not all delivered")
                time.sleep(0.05)
            # Less the linger the last events had to wait, which is not lost capacity.
            busy_s = time.monotonic() - started - LINGER_MS / 1000
            capacity_per_s = probe.requests / max(busy_s, probe.elapsed_s)
            httpx.post(f"{url}/_sandbox/reset", timeout=30)
        rate = capacity_per_s / 2
        load = asyncio.run(
            run_load(
                port,
                lambda n: make(n + 10**9),  # seq numbers apart from the probe's
                connections=64,
                duration_s=duration_s,
                rate_per_s=rate,
                on_ok=lambda n, at_s: on_ok(n + 10**9, at_s),
            )
        )
        deadline = time.monotonic() + 120
        while sandbox_stats(url)["ops_accepted"] < len(acked) and time.monotonic() < deadline:
            time.sleep(0.25)
        records = _received(url)
    finally:
        stack.close()
    latencies_ms = sorted(
        (r["received_at"] - acked[r["op"]["attributes"]["seq"]]) * 1000
        for r in records
        if r["op"]["attributes"]["seq"] in acked
    )
    if len(latencies_ms) < len(acked):
        raise RuntimeError(f"only {len(latencies_ms)} of {len(acked)} events arrived")
    p50 = latencies_ms[len(latencies_ms) // 2]
    p99 = latencies_ms[min(len(latencies_ms) - 1, int(0.99 * len(latencies_ms)))]
    budget_ms = LINGER_MS + 250
    achieved = load.rate_per_s
    return [
        Figure(
            "end-to-end latency p99 (accept -> upstream 200)",
            p99,
            "ms",
            "budget linger+250",
            budget_ms,
            f"<= {budget_ms} ms",
            p99 <= budget_ms,
            f"p50 {p50:.0f} ms; {achieved:,.0f} req/s (half of the stack's {capacity_per_s:,.0f}), "
            f"{len(latencies_ms):,} events, CIOQ_LINGER_MS={LINGER_MS}",
            invert=True,
        )
    ]
