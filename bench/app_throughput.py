"""App API throughput and cost with the rate limits lifted (issue 29, acceptance 2).

One worker with 2 prefork processes (``cioq worker --concurrency 2``), the api and the
sweeper send into a sandbox whose 100/s limit is lifted, as is cioq's own
(``CIOQ_APP_SEND_RPS``). Producers post transactional emails over kept-alive connections,
each waiting for Customer.io's answer (the default, as the official clients do), closed
loop, so what limits the rate is cioq's send path, not the rate limit:

* sends per second arriving at the sandbox, against the same load generator posting the
  same requests straight to the sandbox; every send must arrive exactly once;
* CPU per send of api + worker (with its children) + sweeper, from /proc, against the CPU
  of one client (httpx, as an application would post) posting the same requests directly,
  one after another.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.app_api import email
from bench.figures import Figure
from bench.loadgen import LoadResult, build_request, cpu_seconds, run_load
from bench.send_cost import _tree_cpu_s
from bench.stack import APP_KEY, INGEST_KEY, BenchStack, sandbox_stats, wait_for

#: Far above anything two cores can send: neither limit is what is measured.
LIFTED_RPS = 1_000_000
GOAL_SENDS_PER_S = 500
GOAL_CPU_RATIO = 2.0
#: Producers waiting for their answers at once.
CONNECTIONS = 32


def _lifted(n: int) -> dict[str, Any]:
    return email(n, prefix="lifted")


def _requests(port: int, key: str, offset: int) -> Any:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}

    def make(n: int) -> bytes:
        body = orjson.dumps(_lifted(offset + n))
        return build_request("POST", "/v1/send/email", body, port=port, headers=headers)

    return make


def _load(port: int, key: str, offset: int, duration_s: float) -> LoadResult:
    make = _requests(port, key, offset)
    return asyncio.run(run_load(port, make, connections=CONNECTIONS, duration_s=duration_s))


def _direct_cpu_ms(sandbox: str, sends: int, offset: int) -> float:
    """CPU of this process per send, posting one send after another with httpx."""
    headers = {"Authorization": f"Bearer {APP_KEY}"}
    with httpx.Client(base_url=sandbox, headers=headers, timeout=30) as client:
        client.post("/v1/send/email", json=_lifted(offset)).raise_for_status()  # connected
        started = time.process_time()
        for n in range(1, sends + 1):
            client.post("/v1/send/email", json=_lifted(offset + n)).raise_for_status()
        return (time.process_time() - started) / sends * 1000


def _warm_up(api: str, offset: int) -> int:
    """Until a send is answered with Customer.io's body; returns how many were posted."""
    headers = {"Authorization": f"Bearer {INGEST_KEY}"}
    posted = 0
    with httpx.Client(base_url=api, headers=headers, timeout=30) as client:

        def answered() -> bool:
            nonlocal posted
            posted += 1
            return client.post("/v1/send/email", json=_lifted(offset + posted)).status_code == 200

        wait_for(answered, timeout_s=120, interval_s=0.5)
        for _ in range(50):
            posted += 1
            client.post("/v1/send/email", json=_lifted(offset + posted))
    return posted


def _arrivals(sandbox: str) -> Counter[int]:
    """How many times each send (by its ``message_data.n``) reached the sandbox."""
    seen: Counter[int] = Counter()
    after = 0
    with httpx.Client(base_url=sandbox, timeout=60) as client:
        while True:
            page = client.get("/_sandbox/received", params={"after": after, "limit": 5000}).json()
            for record in page["records"]:
                if record["kind"] == "app":
                    seen[int(record["op"]["body"]["message_data"]["n"])] += 1
            if not page["records"]:
                return seen
            after = page["next"]


def run(tmp: Path, *, quick: bool) -> list[Figure]:
    duration_s = 6.0 if quick else 20.0
    direct_sends = 500 if quick else 2000
    stack = BenchStack(tmp / "app-lifted", linger_ms=1000, app_send_rps=LIFTED_RPS)
    try:
        sandbox = stack.start_sandbox(record="full", app_send_rps=LIFTED_RPS)
        sandbox_port = stack.sandbox_port
        port = stack.start_api()
        stack.start_worker(concurrency=2, pool="prefork")
        stack.start_sweeper()
        measured = {p.name: p.pid for p in stack.procs if not p.name.startswith("sandbox")}
        worker = next(pid for name, pid in measured.items() if name.startswith("worker"))
        api = f"http://127.0.0.1:{port}"
        # Send numbers: the direct ones from 0, cioq's from 10**6, the warm-up's from 10**7.
        direct = _load(sandbox_port, APP_KEY, 0, duration_s)
        direct_cpu_ms = _direct_cpu_ms(sandbox, direct_sends, 500_000)
        posted = _warm_up(api, 10**7)
        accepted_before = int(sandbox_stats(sandbox)["app_accepted"])
        cpu_before = {name: _tree_cpu_s(pid) for name, pid in measured.items()}
        main_before = cpu_seconds(worker)
        redis_before = _tree_cpu_s(stack.redis.proc.pid)  # type: ignore[union-attr]
        queued = _load(port, INGEST_KEY, 10**6, duration_s)
        spent = {name: _tree_cpu_s(pid) - cpu_before[name] for name, pid in measured.items()}
        main_s = cpu_seconds(worker) - main_before
        cpu_s = sum(spent.values())
        redis_s = _tree_cpu_s(stack.redis.proc.pid) - redis_before  # type: ignore[union-attr]
        sent = int(sandbox_stats(sandbox)["app_accepted"]) - accepted_before
        rate = sent / queued.elapsed_s
        stored = queued.requests + posted  # every 2xx (200, or 202 when slow) is a stored send

        def all_arrived() -> bool:
            return int(sandbox_stats(sandbox)["app_accepted"]) - direct.requests >= stored

        wait_for(all_arrived, timeout_s=120)
        seen = _arrivals(sandbox)
        twice = sum(1 for n, count in seen.items() if n >= 10**6 and count > 1)
        cioq_arrived = sum(1 for n in seen if n >= 10**6)
        cpu_ms = cpu_s / sent * 1000 if sent else float("nan")
        answered = queued.statuses.get(200, 0)
        # Where it goes, so a change of the cost shows where it came from: the worker's main
        # process (Celery's consumer) apart from its prefork processes (the drains).
        split = {
            "api": spent["api"],
            "worker main": main_s,
            "worker processes": sum(v for k, v in spent.items() if k.startswith("worker")) - main_s,
            "sweeper": spent["sweeper"],
        }
        shares = ", ".join(f"{k} {v / max(sent, 1) * 1000:.2f}" for k, v in split.items())
        return [
            Figure(
                "App sends per second, limits lifted, 1 worker x 2 processes",
                rate,
                "sends/s",
                "the same requests posted directly",
                direct.rate_per_s,
                f">= {GOAL_SENDS_PER_S}/s, every send once",
                rate >= GOAL_SENDS_PER_S and twice == 0 and cioq_arrived == stored,
                f"{CONNECTIONS} producers waiting for the answer, {duration_s:.0f} s; "
                f"{answered} answered 200, {queued.requests - answered} 202, "
                f"{queued.errors} errors; stored {stored}, arrived {cioq_arrived}, twice {twice}",
            ),
            Figure(
                "App CPU per send end to end vs direct post",
                cpu_ms,
                "ms",
                "httpx client posting directly",
                direct_cpu_ms,
                f"<= {GOAL_CPU_RATIO:g}x the direct client's",
                cpu_ms <= GOAL_CPU_RATIO * direct_cpu_ms,
                f"api + worker + sweeper over {sent} sends ({shares} ms); Redis another "
                f"{redis_s / sent * 1000 if sent else float('nan'):.2f} ms/send",
                invert=True,
            ),
        ]
    finally:
        stack.close()
