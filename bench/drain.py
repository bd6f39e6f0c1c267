"""Drain figures: one worker process against a zero-latency sandbox, from a pre-filled backlog.

The baseline is the least a drain can do in Python on the same backlog: read the head of
each stream, join ~500,000-byte bodies, POST them over a kept-alive connection, trim. No
lease, fencing, retry state, crash guard or metrics. The same run measures the worker's
memory while it drains, and the ops coalescing saves on a workload of repeated identifies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.figures import Figure
from bench.stack import API_KEY, SITE_ID, BenchStack, rss_bytes, sandbox_requests, sandbox_stats
from service import keys
from service.delivery.packing import ENVELOPE_BYTES, batch_body
from service.jobs import Job, Lane
from service.lanes.track.jobs import v2_job
from service.stream_ids import next_id

PAD = "p" * 360  # v2 ops of ~500 bytes
#: Fewer shards than the default 32: one worker drains them, and each ends in a part-full
#: batch, which would otherwise weigh on the mean fill of a short (--quick) run.
SHARDS = 8
MAX_BATCH_BYTES = 500_000


def event_op(i: int) -> dict[str, Any]:
    return {
        "type": "person",
        "action": "event",
        "identifiers": {"id": f"person-{i % 20_000}"},
        "name": "drain",
        "id": f"01J{i:023d}",
        "attributes": {"n": i, "pad": PAD},
    }


def identify_op(i: int, block: int = 200) -> dict[str, Any]:
    """People come in blocks of `block`: each is identified four times, the block's other
    people in between, so a person's identifies land ~block/shards apart in one stream."""
    base, within = divmod(i, 4 * block)
    step, person = divmod(within, block)
    return {
        "type": "person",
        "action": "identify",
        "identifiers": {"id": f"person-{base * block + person}"},
        "attributes": {f"a{step}": step, "pad": PAD[:300]},
    }


def fill(
    stack: BenchStack,
    ops: list[dict[str, Any]],
    total: int,
    make_job: Callable[[dict[str, Any]], Job] = v2_job,
) -> None:
    copies, rest = divmod(total, len(ops))
    stack.fill(ops, copies=copies, shards=SHARDS, make_job=make_job)
    if rest:
        stack.fill(ops[:rest], shards=SHARDS, make_job=make_job)


def _head(
    client: redis.Redis, stream: str, after: bytes | None = None
) -> list[tuple[bytes, dict[bytes, bytes]]]:
    start = b"(" + after if after else b"-"
    rows: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(stream, min=start, count=4000)  # type: ignore[assignment]
    return rows


def bare_drain(client: redis.Redis, url: str) -> None:
    """The baseline drain loop: read, pack, POST, trim; shard after shard until empty.

    Like the worker it reads 4,000 entries at a time and tops its buffer up after each
    batch, so both do the same Redis reads.
    """
    auth = (SITE_ID, API_KEY)
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=url, auth=auth, headers=headers, timeout=30) as http:
        for shard in range(SHARDS):
            stream = keys.shard_keys("default", shard, Lane.TRACK).stream
            rows = _head(client, stream)
            while rows:
                ops = [fields[b"o"] for _, fields in rows]
                stop = _longest_prefix(ops)
                http.post("/api/v2/batch", content=batch_body(ops[:stop])).raise_for_status()
                client.xtrim(stream, minid=next_id(rows[stop - 1][0]), approximate=False)
                rows = rows[stop:]
                if len(rows) < 4000:
                    rows += _head(client, stream, rows[-1][0] if rows else None)[: 4000 - len(rows)]


def _longest_prefix(ops: list[bytes]) -> int:
    """How many ops from the head fit in one body: the simplest packer there is."""
    size, stop = ENVELOPE_BYTES - 1, 0
    for op in ops:
        size += len(op) + 1
        if size > MAX_BATCH_BYTES:
            break
        stop += 1
    return stop


class RssSampler:
    """Samples a process tree's resident memory every `interval_s` in a thread."""

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)
        self._thread.start()

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.samples.append(rss_bytes(self.pid))

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join()
        return self.samples


def _settled_rss(pid: int, timeout_s: float = 60) -> int:
    """The worker's memory once start-up is over: two readings 1 s apart within 1%."""
    deadline = time.monotonic() + timeout_s
    last = rss_bytes(pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = rss_bytes(pid)
        if last and abs(now - last) <= 0.01 * last:
            return now
        last = now
    return last


def drain_with_worker(
    stack: BenchStack,
    url: str,
    total: int,
    *,
    timeout_s: float,
    lane: Lane = Lane.TRACK,
    **settings: Any,
) -> dict[str, Any]:
    """Start one solo worker and the sweeper; time the drain from the first op delivered."""
    counter = "cdp_accepted" if lane is Lane.PIPELINES else "ops_accepted"
    base = sandbox_stats(url)[counter]
    worker = stack.start_worker(concurrency=1, pool="solo", **settings)
    idle_rss = _settled_rss(worker.pid)
    sampler = RssSampler(worker.pid)
    sweeper = stack.start_sweeper()
    start = time.monotonic()
    first: tuple[float, int] | None = None
    deadline = start + timeout_s
    while True:
        done = sandbox_stats(url)[counter] - base
        now = time.monotonic()
        if first is None and done:
            first = (now, done)
        if stack.backlog(SHARDS, lane) == 0:
            break
        if now > deadline:
            raise TimeoutError(f"drain not finished after {timeout_s}s: {done} of {total}")
        time.sleep(0.2)
    end = time.monotonic()
    samples = sampler.stop()
    worker.stop()
    sweeper.stop()
    done = sandbox_stats(url)[counter] - base
    if first is None or first[1] > total // 2:
        # Timed from the first op delivered: a drain that was over (or mostly over) before
        # that first look was not measured, and its rate would be a guess.
        seen = "nothing delivered" if first is None else f"{first[1]:,} of {total:,} delivered"
        raise RuntimeError(f"drain not timed: {seen} at the first look")
    t0, d0 = first
    return {
        "delivered": done,
        "rate": (total - d0) / max(end - t0, 1e-9),
        "idle_rss": idle_rss,
        "max_rss": max(samples, default=idle_rss),
        "rss_samples": samples,
    }


def _flatness(samples: list[int]) -> str:
    """Peak memory in the first and second half of the drain: equal when flat."""
    if len(samples) < 2:
        return "too short to sample"
    half = len(samples) // 2
    mb = 1024 * 1024
    first, second = max(samples[:half]) / mb, max(samples[half:]) / mb
    return f"peak {first:.0f} MB in the first half, {second:.0f} MB in the second"


def run(tmp: Path, *, quick: bool) -> list[Figure]:
    total = 200_000 if quick else 1_000_000
    coalesce_total = 40_000 if quick else 200_000
    stack = BenchStack(tmp / "drain", shards=SHARDS)
    try:
        url = stack.start_sandbox(record="count")
        ops = [event_op(i) for i in range(20_000)]
        fill(stack, ops, total)
        client = stack.redis.client()
        start = time.monotonic()
        bare_drain(client, url)
        bare_rate = total / (time.monotonic() - start)
        httpx.post(f"{url}/_sandbox/reset")
        fill(stack, ops, total)
        cioq = drain_with_worker(stack, url, total, timeout_s=600 if quick else 1800)
        bodies = [r["body_bytes"] for r in sandbox_requests(url) if r["path"] == "/api/v2/batch"]
        mean_bytes = sum(bodies) / len(bodies)
        assert cioq["delivered"] == total, cioq
        httpx.post(f"{url}/_sandbox/reset")
        fill(stack, [identify_op(i) for i in range(coalesce_total)], coalesce_total)
        merged = drain_with_worker(stack, url, coalesce_total, timeout_s=600, coalesce="true")
        memory, memory_total = cioq, total
        if not quick:
            # The memory figure's own run: a 5,000,000-op backlog.
            memory_total = 5_000_000
            httpx.post(f"{url}/_sandbox/reset")
            fill(stack, ops, memory_total)
            memory = drain_with_worker(stack, url, memory_total, timeout_s=3600)
        client.close()
    finally:
        stack.close()
    saved = coalesce_total - merged["delivered"]
    mb = 1024 * 1024
    return [
        Figure(
            "drain, 1 worker process, 0 ms upstream",
            cioq["rate"],
            "ops/s",
            "bare read/pack/POST/trim loop",
            bare_rate,
            ">= 50,000 ops/s",
            cioq["rate"] >= 50_000,
            f"backlog {total:,} ops of ~500 B",
        ),
        Figure(
            "drain batch fill (mean body)",
            mean_bytes,
            "B",
            "limit",
            MAX_BATCH_BYTES,
            ">= 95% of 500,000 B",
            mean_bytes >= 0.95 * MAX_BATCH_BYTES,
            f"{len(bodies)} requests",
        ),
        Figure(
            "coalescing: ops saved (4 identifies per person)",
            saved,
            "ops",
            "ops queued",
            coalesce_total,
            # 4 identifies per person merge into 1 at best (75%); a drain that merges
            # little (lost coalescing, or blocks too far apart) misses 50%.
            ">= 50% (max 75%)",
            saved >= 0.5 * coalesce_total,
            f"{merged['delivered']:,} ops sent upstream; drain {merged['rate']:,.0f} ops/s",
        ),
        Figure(
            f"worker RSS while draining {memory_total:,} ops",
            memory["max_rss"] / mb,
            "MB",
            "idle worker",
            memory["idle_rss"] / mb,
            "< 200 MB, flat",
            memory["max_rss"] < 200 * mb,
            _flatness(memory["rss_samples"]),
        ),
    ]
