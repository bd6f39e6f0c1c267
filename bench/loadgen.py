"""A small HTTP/1.1 load generator on raw asyncio streams, with kept-alive connections.

It is much cheaper per request than an HTTP client library, so on a small machine the
server under test, not the generator, is what gets measured; both sides of a comparison
use it the same way.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    #: CPU the server process spent during the load (when the caller measured it).
    cpu_s: float = 0.0

    @property
    def rate_per_s(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def cpu_per_request_us(self) -> float:
        return self.cpu_s / self.requests * 1e6 if self.requests else 0.0

    def percentile_s(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` so far: unlike req/s, it barely moves when other
    work shares the cores, so it compares two servers on a loaded machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def build_request(
    method: str, path: str, body: bytes, *, port: int, headers: dict[str, str]
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def run_load(
    port: int,
    make_request: Callable[[int], bytes],
    *,
    connections: int,
    duration_s: float,
    rate_per_s: float | None = None,
    on_ok: Callable[[int, float], None] | None = None,
) -> LoadResult:
    """Send requests for `duration_s` over `connections` kept-alive connections.

    Closed loop by default (each connection sends as soon as it has an answer); with
    `rate_per_s`, requests start on a fixed schedule and latency includes queueing.
    `make_request(n)` builds request number n; `on_ok(n, t)` is told when n got a 2xx.
    """
    result = LoadResult()
    counter = iter(range(10**12))
    start = time.perf_counter()
    stop_at = start + duration_s

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                n = next(counter)
                due = start + n / rate_per_s if rate_per_s else time.perf_counter()
                if due >= stop_at:
                    return
                if rate_per_s and due > time.perf_counter():
                    await asyncio.sleep(due - time.perf_counter())
                writer.write(make_request(n))
                status = await _read_response(reader)
                done = time.perf_counter()
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if 200 <= status < 300:
                    result.requests += 1
                    result.latencies_s.append(done - due)
                    if on_ok is not None:
                        on_ok(n, time.time())
                else:
                    result.errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    result.elapsed_s = time.perf_counter() - start
    return result
