"""Why the ingest API is not a Starlette app: the same ingest through both, same load.

cioq's api (its own ~170-line router, `Request` and `Response` in service/api/http.py) against
bench/starlette_app.py, which serves the same handlers, checks and Redis writes through
Starlette with raw-path routing. Same uvicorn settings, same load generator, same requests
(single-op v1 events over 16 connections, 1,000-op v2 batches over 2), best of alternating
rounds.
"""

from __future__ import annotations

from pathlib import Path

from bench.figures import Figure
from bench.ingest import _best_of, _bulk, _single
from bench.stack import BenchStack

OPS_PER_BATCH = 1000


def run(tmp: Path, *, quick: bool) -> list[Figure]:
    duration_s = 3.0 if quick else 10.0
    rounds = 2 if quick else 3
    stack = BenchStack(tmp / "framework")
    try:
        stack.start_sandbox()
        ports = {"starlette": stack.start_starlette_app(), "cioq": stack.start_api()}
        single = _best_of(ports, _single, connections=16, duration_s=duration_s, rounds=rounds)
        bulk = _best_of(
            ports,
            lambda port: _bulk(port, OPS_PER_BATCH),
            connections=2,
            duration_s=duration_s,
            rounds=rounds,
        )
    finally:
        stack.close()
    return [
        Figure(
            "ingest single-op, own HTTP layer vs Starlette",
            single["cioq"].rate_per_s,
            "req/s",
            "same ingest on Starlette",
            single["starlette"].rate_per_s,
            "reported",
            True,
            f"p99 {single['cioq'].percentile_s(0.99) * 1000:.1f} ms vs "
            f"{single['starlette'].percentile_s(0.99) * 1000:.1f} ms",
        ),
        Figure(
            "ingest bulk (1,000-op v2 batches), own HTTP layer vs Starlette",
            bulk["cioq"].rate_per_s * OPS_PER_BATCH,
            "ops/s",
            "same ingest on Starlette",
            bulk["starlette"].rate_per_s * OPS_PER_BATCH,
            "reported",
            True,
        ),
    ]
