"""Where a single-op ingest request's CPU goes, against the floors under it (issue 29).

Not a `bench/run` group (no goal, nothing recorded): the measurements behind the ingest
analysis in docs/benchmarks.md, to run again when that analysis is in question::

    PYTHONPATH=$PWD python -m bench.ingest_floor [--rounds 5] [--duration-s 4]

Over HTTP (the load generator of `bench/ingest.py`, 32 connections, rounds alternating
between the servers), the server process's CPU per request of:

* cioq's api answering the single-op figure's request (a v1 event), and ``GET /healthz``
  (its HTTP layer and dispatch with no body, auth or store);
* the bare ASGI+XADD app answering the same request, and the same with ``--no-store``
  (uvicorn, the body parsed and serialized, no XADD).

In one process with no HTTP (32 callers on one event loop, real Redis), the CPU per
request of cioq's `IngestApp.respond` for the same request, against redis-py's asyncio
``XADD`` of the same op, which is what the bare app adds to its floor.

Each figure is the median over the rounds; the machine is shared, so read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.ingest import _single
from bench.loadgen import build_request, cpu_seconds, run_load
from bench.stack import AUTH_HEADER, BenchStack

CONNECTIONS = 32
IN_PROCESS_REQUESTS = 20_000


def _over_http(stack: BenchStack, rounds: int, duration_s: float) -> dict[str, float]:
    cioq = stack.start_api()
    cioq_pid = stack.procs[-1].pid
    bare = stack.start_bare_app()
    bare_pid = stack.procs[-1].pid
    floor = stack.start_bare_app(store=False)
    floor_pid = stack.procs[-1].pid
    health = build_request("GET", "/healthz", b"", port=cioq, headers={})
    loads: dict[str, tuple[int, int, Any]] = {
        "cioq api, single-op event": (cioq, cioq_pid, _single(cioq)),
        "cioq api, GET /healthz": (cioq, cioq_pid, lambda n: health),
        "bare ASGI+XADD app, single-op event": (bare, bare_pid, _single(bare)),
        "bare app --no-store, single-op event": (floor, floor_pid, _single(floor)),
    }
    found: dict[str, list[float]] = {name: [] for name in loads}
    for _ in range(rounds + 1):  # the first round warms every server up, and is dropped
        for name, (port, pid, make) in loads.items():
            before_s = cpu_seconds(pid)
            result = asyncio.run(
                run_load(port, make, connections=CONNECTIONS, duration_s=duration_s)
            )
            if result.errors or not result.requests:
                raise RuntimeError(f"{name}: {result.statuses}, {result.errors} errors")
            found[name].append((cpu_seconds(pid) - before_s) / result.requests * 1e6)
    return {name: statistics.median(values[1:]) for name, values in found.items()}


def _scope(n: int) -> dict[str, Any]:
    path = f"/api/v1/customers/person-{n % 10000}/events"
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"authorization", AUTH_HEADER.encode()),
            (b"content-type", b"application/json"),
        ],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
    }


class _Body:
    def __init__(self, body: bytes) -> None:
        self.body = body

    async def read(self, headers: dict[bytes, bytes], *, max_bytes: int, timeout_s: float) -> bytes:
        return self.body


def _body(n: int) -> bytes:
    return orjson.dumps({"name": "signed_up", "data": {"plan": "pro", "n": n}})


async def respond_cpu_us(requests: int = IN_PROCESS_REQUESTS) -> float:
    from service.api.app import create_app
    from service.config.loading import load_settings

    app = create_app(load_settings())
    await app.gate.startup()
    counter = iter(range(requests))

    async def caller() -> None:
        for n in counter:
            response = await app.respond(_scope(n), _Body(_body(n)))
            if response.status != 200:
                raise RuntimeError(f"respond answered {response.status}: {response.body!r}")

    started_s = time.process_time()
    await asyncio.gather(*(caller() for _ in range(CONNECTIONS)))
    spent_s = time.process_time() - started_s
    await app.aclose()
    return spent_s / requests * 1e6


async def xadd_cpu_us(redis_url: str, requests: int = IN_PROCESS_REQUESTS) -> float:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    counter = iter(range(requests))

    async def caller() -> None:
        for n in counter:
            await client.xadd("floor:q", {b"o": orjson.dumps(orjson.loads(_body(n)))})

    started_s = time.process_time()
    await asyncio.gather(*(caller() for _ in range(CONNECTIONS)))
    spent_s = time.process_time() - started_s
    await client.aclose()
    return spent_s / requests * 1e6


def use_stack_settings(stack: BenchStack) -> None:
    """This process's settings (`load_settings`) become the stack's api's."""
    os.environ.update({k: v for k, v in stack.env.items() if k.startswith("CIOQ_")})


def _in_process(stack: BenchStack, rounds: int) -> dict[str, float]:
    import uvloop

    use_stack_settings(stack)
    found: dict[str, list[float]] = {"respond": [], "xadd": []}
    for _ in range(rounds + 1):
        found["respond"].append(uvloop.run(respond_cpu_us()))
        found["xadd"].append(uvloop.run(xadd_cpu_us(stack.redis.url)))
    return {
        "cioq IngestApp.respond, no HTTP": statistics.median(found["respond"][1:]),
        "redis-py asyncio XADD, no HTTP": statistics.median(found["xadd"][1:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration-s", type=float, default=4.0)
    args = parser.parse_args()
    stack = BenchStack(Path(tempfile.mkdtemp(prefix="ingest-floor-")))
    try:
        http = _over_http(stack, args.rounds, args.duration_s)
        local = _in_process(stack, args.rounds)
    finally:
        stack.close()
    print(f"CPU per request, median of {args.rounds} rounds (load {os.getloadavg()[0]:.1f})")
    for name, value in {**http, **local}.items():
        print(f"  {value:7.1f} µs  {name}")
    bare = http["bare ASGI+XADD app, single-op event"]
    floor = http["cioq api, GET /healthz"]
    print(
        f"1.2x the bare app is {bare / 1.2:.1f} µs per request: "
        f"{bare / 1.2 - floor:.1f} µs above cioq's HTTP floor, where the request itself "
        f"costs cioq {http['cioq api, single-op event'] - floor:.1f}"
    )


if __name__ == "__main__":
    main()
