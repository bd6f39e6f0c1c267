"""App API figures, each against a baseline measured in the same run.

* producer-visible latency of a send, normal case: one producer posts transactional
  emails one after another to cioq, which answers with Customer.io's own
  ``{delivery_id, queued_at}`` once the worker got it (stored, triggered, drained, sent);
  the baseline posts the same emails straight to the sandbox. p50 and p99 of each.
* sustained sends per second under the limit: 2 workers x 2 concurrency drain a backlog
  of sends into a sandbox that answers 429 past 100/s; the rate at the sandbox against
  the limit, with the busiest second (it must stay at or under the limit).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench.figures import Figure
from bench.stack import APP_KEY, INGEST_KEY, BenchStack, sandbox_requests, wait_for

LIMIT_PER_S = 100


def email(n: int, prefix: str = "p") -> dict[str, Any]:
    """Transactional email `n`, to the person `{prefix}{n}`."""
    return {
        "transactional_message_id": 1,
        "to": f"{prefix}{n}@example.com",
        "identifiers": {"id": f"{prefix}{n}"},
        "message_data": {"n": n},
    }


def _latencies(url: str, key: str, count: int) -> list[float]:
    """One send after another, started at most 50 a second (half the limit, so neither
    side meets a 429)."""
    out: list[float] = []
    headers = {"Authorization": f"Bearer {key}"}
    next_s = time.perf_counter()
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for n in range(count):
            time.sleep(max(0.0, next_s - time.perf_counter()))
            started = time.perf_counter()
            next_s = started + 2 / LIMIT_PER_S
            answer = client.post("/v1/send/email", json=email(n))
            out.append(time.perf_counter() - started)
            if answer.status_code != 200 or "delivery_id" not in answer.json():
                raise RuntimeError(f"send {n}: {answer.status_code} {answer.text}")
    return out


def _warm_up(api: str) -> None:
    """Until a send is answered with Customer.io's body: the workers are up and warm."""
    headers = {"Authorization": f"Bearer {INGEST_KEY}"}
    with httpx.Client(base_url=api, headers=headers, timeout=30) as client:
        wait_for(
            lambda: client.post("/v1/send/email", json=email(0)).status_code == 200,
            timeout_s=120,
        )
        for n in range(20):
            client.post("/v1/send/email", json=email(n))


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def busiest_second(times: list[float]) -> int:
    """The most of sorted `times` in any window [t, t + 1 s) that starts at one of them."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def run(tmp: Path, *, quick: bool) -> list[Figure]:
    sends = 200 if quick else 1000
    backlog = 1000 if quick else 4000
    figures: list[Figure] = []
    stack = BenchStack(tmp / "app", linger_ms=1000)
    try:
        sandbox = stack.start_sandbox(record="count")
        port = stack.start_api()
        stack.start_worker(concurrency=2, pool="prefork")
        stack.start_worker(concurrency=2, pool="prefork")
        stack.start_sweeper()
        api = f"http://127.0.0.1:{port}"
        _warm_up(api)
        direct = _latencies(sandbox, APP_KEY, sends)
        queued = _latencies(api, INGEST_KEY, sends)
        for q in (50, 99):
            figures.append(
                Figure(
                    f"App send latency p{q}, answered with Customer.io's own body",
                    _p(queued, q),
                    "ms",
                    "sandbox called directly",
                    _p(direct, q),
                    "p99 within CIOQ_APP_SEND_WAIT_MS (3,000 ms)",
                    _p(queued, q) < 3000,
                    f"{sends} sequential sends; store + trigger + drain + send",
                    invert=True,
                )
            )
        httpx.post(f"{sandbox}/_sandbox/reset", timeout=30)
        headers = {"Authorization": f"Bearer {INGEST_KEY}", "Prefer": "respond-async"}
        with httpx.Client(base_url=api, headers=headers, timeout=30) as client:
            for n in range(backlog):
                client.post("/v1/send/email", json=email(n)).raise_for_status()

        def arrived() -> bool:
            stats = httpx.get(f"{sandbox}/_sandbox/stats", timeout=30).json()
            return int(stats["app_accepted"]) >= backlog

        wait_for(arrived, timeout_s=backlog / 20)
        log = [e for e in sandbox_requests(sandbox) if e["path"].startswith("/v1/send/")]
        times = sorted(e["received_at"] for e in log)
        rate = (len(times) - 1) / (times[-1] - times[0])
        throttled = sum(1 for e in log if e["status"] == 429)
        figures.append(
            Figure(
                "App sends per second, sustained, 2 workers x 2",
                rate,
                "sends/s",
                "Customer.io's limit",
                LIMIT_PER_S,
                ">= 95% of the limit, no second over it, no 429",
                rate >= 0.95 * LIMIT_PER_S
                and busiest_second(times) <= LIMIT_PER_S
                and throttled == 0,
                f"{backlog} queued; busiest second {busiest_second(times)}; 429s {throttled}",
            )
        )
    finally:
        stack.close()
    return figures
