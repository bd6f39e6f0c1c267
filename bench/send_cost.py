"""What never-sent-twice costs (issue 22, acceptance 4): producer-visible latency of a
keyed App send (``Idempotency-Key``, answered with Customer.io's body once sent) p50 and
p99, and the CPU the stack spends per send (api, workers, sweeper and Redis, user +
system, from /proc).

Run it in this checkout for "after", and in a checkout of an older commit for "before":
``python -m bench.send_cost`` from that checkout's root runs that checkout's code
(``-m cioq`` resolves from the working directory first).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.stack import INGEST_KEY, BenchStack

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _tree_cpu_s(pid: int) -> float:
    """User + system CPU of `pid` and its living descendants, in seconds."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        if current in stats:
            total += int(stats[current][11]) + int(stats[current][12])
    return total / TICKS_PER_S


def _email(tag: str, n: int) -> dict[str, Any]:
    return {
        "transactional_message_id": 1,
        "to": f"{tag}{n}@example.com",
        "identifiers": {"id": f"{tag}{n}"},
        "message_data": {"n": n},
    }


def measure(sends: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        stack = BenchStack(Path(tmp) / "cost", linger_ms=1000)
        try:
            stack.start_sandbox(record="count")
            port = stack.start_api()
            stack.start_worker(concurrency=2, pool="prefork")
            stack.start_worker(concurrency=2, pool="prefork")
            stack.start_sweeper()
            headers = {"Authorization": f"Bearer {INGEST_KEY}"}
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30
            ) as api:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:  # until the workers answer a send
                    try:
                        if api.post("/v1/send/email", json=_email("w", 0)).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.5)
                for n in range(20):
                    api.post("/v1/send/email", json=_email("w", n))
                pids = [p.pid for p in stack.procs] + [stack.redis.proc.pid]  # type: ignore[union-attr]
                cpu_before = sum(_tree_cpu_s(pid) for pid in pids)
                latencies: list[float] = []
                for n in range(sends):
                    started = time.perf_counter()
                    answer = api.post(
                        "/v1/send/email",
                        json=_email("k", n),
                        headers={"Idempotency-Key": f"cost-{n}"},
                    )
                    latencies.append(time.perf_counter() - started)
                    if answer.status_code != 200:
                        raise RuntimeError(f"send {n}: {answer.status_code} {answer.text}")
                    time.sleep(max(0.0, 0.02 - latencies[-1]))  # 50/s at most: no 429
                cpu_s = sum(_tree_cpu_s(pid) for pid in pids) - cpu_before
        finally:
            stack.close()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "cpu_ms_per_send": cpu_s / sends * 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=500)
    args = parser.parse_args(argv)
    found = measure(args.sends)
    print(
        f"keyed App send, {args.sends} sequential: p50 {found['p50_ms']:.1f} ms, "
        f"p99 {found['p99_ms']:.1f} ms, CPU {found['cpu_ms_per_send']:.2f} ms/send"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
