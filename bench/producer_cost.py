"""What recording producers costs ingest: an in-process micro-benchmark of the api.

Calls the ingest ASGI app directly (no sockets, no uvicorn) for single-op Track events and
1,000-op v2 batches, storing into a real Redis, and prints the wall and CPU microseconds per
request and the stream bytes per stored entry. Run it once per tree to compare, e.g.::

    PYTHONPATH=/work/main python -m bench.producer_cost --redis-url redis://127.0.0.1:6379/12
    PYTHONPATH=$PWD python -m bench.producer_cost --redis-url redis://127.0.0.1:6379/12

Both trees read the same configuration (one bare ingest key), so a tree that records
producers stores the key's fingerprint with every job and one that does not stores nothing.
The database is flushed first: give it one of your own.

``--enqueue-only`` (a tree that records producers) isolates the store: 1,000-job
`Queue.enqueue` calls with and without a producer, alternating, in wall microseconds per
call, most of which is the enqueue script's run in Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import orjson
import redis

from service import keys
from service.api.app import create_app
from service.config import Settings
from service.jobs import Lane

KEY = "bench-ingest-key"


class _NoTriggers:
    """Drain triggers go nowhere: only ingest is measured."""

    def send(self, *args: Any, **kwargs: Any) -> None:
        return None

    def close(self) -> None:
        return None


async def _call(app: Any, path: str, body: bytes) -> int:
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"authorization", b"Bearer " + KEY.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "scheme": "http",
        "server": ("127.0.0.1", 80),
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def _batch(n: int) -> bytes:
    ops = [
        {
            "type": "person",
            "action": "event",
            "identifiers": {"id": f"person-{i % 500}"},
            "name": "bulk",
            "attributes": {"n": i, "pad": "p" * 330},
        }
        for i in range(n)
    ]
    return orjson.dumps({"batch": ops})


async def _measure(app: Any, requests: int, path_of: Any, body: bytes) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for n in range(requests):
        assert await _call(app, path_of(n), body) == 200
    return (
        (time.perf_counter() - wall) / requests * 1e6,
        (time.process_time() - cpu) / requests * 1e6,
    )


async def main(redis_url: str, rounds: int, singles: int, batches: int) -> dict[str, Any]:
    sync = redis.Redis.from_url(redis_url)
    sync.flushdb()
    settings = Settings(redis_url=redis_url, ingest_keys=KEY, shards=8, linger_ms=0)
    app = create_app(settings, triggers=_NoTriggers())
    await app.gate.startup()
    single = orjson.dumps({"name": "signed_up", "data": {"plan": "pro"}})
    batch = _batch(1000)
    names = ("single", "single_cpu", "batch", "batch_cpu")
    figures: dict[str, list[float]] = {name: [] for name in names}
    try:
        await _measure(app, 200, lambda n: f"/api/v1/customers/w{n}/events", single)  # warm-up
        for _ in range(rounds):
            sync.flushdb()
            wall, cpu = await _measure(
                app, singles, lambda n: f"/api/v1/customers/p{n % 1000}/events", single
            )
            figures["single"].append(wall)
            figures["single_cpu"].append(cpu)
            wall, cpu = await _measure(app, batches, lambda n: "/api/v2/batch", batch)
            figures["batch"].append(wall)
            figures["batch_cpu"].append(cpu)
        streams = [
            keys.shard_keys("default", s, Lane.TRACK).stream for s in range(settings.queue.shards)
        ]
        entries = sum(int(sync.xlen(s)) for s in streams)
        used = sum(int(sync.memory_usage(s, samples=0) or 0) for s in streams)
    finally:
        await app.aclose()
        sync.flushdb()
    out: dict[str, Any] = {k: round(statistics.median(v), 1) for k, v in figures.items()}
    out["stream_bytes_per_entry"] = round(used / max(entries, 1), 1)
    return out


async def enqueue_only(redis_url: str, rounds: int, calls: int) -> dict[str, Any]:
    from service.lanes.track.jobs import v2_job
    from service.store.queue import Queue

    sync = redis.Redis.from_url(redis_url)
    settings = Settings(redis_url=redis_url, shards=8)
    app = create_app(settings, triggers=_NoTriggers())
    queue = Queue(app.redis, settings.redis, settings.queue, None)
    ops = orjson.loads(_batch(1000))["batch"]
    jobs = [v2_job(op) for op in ops]
    figures: dict[str, list[float]] = {"without": [], "with": []}
    try:
        for _ in range(rounds):
            for name, producer in (("without", ""), ("with", "key-09172dd5")):
                sync.flushdb()
                started = time.perf_counter()
                for _ in range(calls):
                    await queue.enqueue("default", jobs, producer=producer)
                figures[name].append((time.perf_counter() - started) / calls * 1e6)
    finally:
        await queue.aclose()
        await app.aclose()
        sync.flushdb()
    return {
        f"enqueue_1000_{k}_producer_us": round(statistics.median(v), 1) for k, v in figures.items()
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--singles", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--enqueue-only", action="store_true")
    args = parser.parse_args()
    if args.enqueue_only:
        result = asyncio.run(enqueue_only(args.redis_url, args.rounds, args.batches))
    else:
        result = asyncio.run(main(args.redis_url, args.rounds, args.singles, args.batches))
    print(orjson.dumps(result).decode())
