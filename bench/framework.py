"""Why the ingest API is not a Starlette app: the same ingest through both, same load.

cioq's api (its own ~170-line router, `Request` and `Response` in service/web/http.py) against
bench/starlette_app.py, which serves the same handlers, checks and Redis writes through
Starlette with raw-path routing. Same uvicorn settings, same load generator, same requests
(single-op v1 events over 16 connections, 1,000-op v2 batches over 2), best of alternating
rounds.
"""

from __future__ import annotations

from pathlib import Path

from bench.figures import Figure
from bench.ingest import OPS_PER_BATCH, measure
from bench.stack import BenchStack


def run(tmp: Path, *, quick: bool) -> list[Figure]:
    stack = BenchStack(tmp / "framework")
    try:
        stack.start_sandbox()
        ports = {"starlette": stack.start_starlette_app(), "cioq": stack.start_api()}
        single, bulk = measure(ports, quick=quick)
    finally:
        stack.close()
    return [
        Figure(
            "ingest single-op, own HTTP layer vs Starlette",
            single["cioq"].rate_per_s,
            "req/s",
            "same ingest on Starlette",
            single["starlette"].rate_per_s,
            # The reason service/web/http.py is not Starlette: it must stay ahead of it.
            "ratio >= 1.0x",
            single["cioq"].rate_per_s >= single["starlette"].rate_per_s,
            f"p99 {single['cioq'].percentile_s(0.99) * 1000:.1f} ms vs "
            f"{single['starlette'].percentile_s(0.99) * 1000:.1f} ms",
        ),
        Figure(
            "ingest bulk (1,000-op v2 batches), own HTTP layer vs Starlette",
            bulk["cioq"].rate_per_s * OPS_PER_BATCH,
            "ops/s",
            "same ingest on Starlette",
            bulk["starlette"].rate_per_s * OPS_PER_BATCH,
            # Bulk time is parse and store, the same in both: the layer may not cost more.
            "ratio >= 0.9x",
            bulk["cioq"].rate_per_s >= 0.9 * bulk["starlette"].rate_per_s,
        ),
    ]
