"""What the index of delivered jobs costs a drain: one `record_sent` per Customer.io 2xx.

Times `service.store.sent_index.record_sent` for full 500-op Track requests (identifies and
events with their ids, ~300 B each, every op a new person) against a real Redis, and prints
the wall milliseconds per request and microseconds per op, and the Redis memory the copies
take per op (``MEMORY USAGE`` of a sample of the keys written). Run it with a database of
your own, which it flushes::

    PYTHONPATH=$PWD python -m bench.sent_index_cost --redis-url redis://127.0.0.1:6379/7
"""

from __future__ import annotations

import argparse
import statistics
import time

import redis

from service import keys
from service.jobs import Lane
from service.lanes import registry  # noqa: F401  (registers the lanes' job kinds)
from service.lanes.track.jobs import v2_job
from service.store.sent_index import record_sent
from service.store.shards import Entry

OPS = 500


def _request(k: int, shard: keys.ShardKeys) -> list[Entry]:
    out: list[Entry] = []
    for i in range(OPS):
        event = i % 2 == 1
        op = {
            "type": "person",
            "action": "event" if event else "identify",
            "identifiers": {"id": f"p{k}-{i}"},
            **({"name": "checked_out", "id": f"01J{k:011d}{i:012d}"} if event else {}),
            "attributes": {"email": f"p{k}-{i}@example.com", "plan": "pro", "pad": "x" * 150},
        }
        job = v2_job(op)
        out.append(Entry(f"{1_700_000_000_000 + k}-{i}".encode(), job.kind, job.payload, shard))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis_url)
    client.flushdb()
    shard = keys.shard_keys("bench", 0, Lane.TRACK)
    requests = [_request(k, shard) for k in range(args.requests)]
    times: list[float] = []
    for entries in requests:
        started = time.perf_counter()
        record_sent(
            client, "bench", "track", entries, int(time.time() * 1000), window_s=3600, per_person=50
        )
        times.append(time.perf_counter() - started)
    sample = [keys.sent_person("bench", "id", f"p0-{i}") for i in range(0, OPS, 2)]
    sample += [keys.sent_event("bench", f"01J{0:011d}{i:012d}") for i in range(1, OPS, 2)]
    per_op = sum(int(client.memory_usage(k) or 0) for k in sample) / OPS
    median_ms = statistics.median(times) * 1000
    print(
        f"record_sent: {median_ms:.1f} ms per {OPS}-op request (median of {len(times)}), "
        f"{median_ms * 1000 / OPS:.0f} us per op; ~{per_op:.0f} B of Redis per op"
    )
    client.flushdb()


if __name__ == "__main__":
    main()
