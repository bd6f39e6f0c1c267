"""Chaos run: producer load on the real stack while workers, Redis and Customer.io misbehave.

    python -m bench.chaos                 # the full run: 100,000 ops
    python -m bench.chaos --ops 6000      # the short run CI does (tests/e2e/drain/test_chaos.py)

The stack is real processes (tests/support/stack.py): redis-server with AOF and
``appendfsync always``, cioq at ``CIOQ_DURABILITY=fsync``, the sandbox Customer.io, the
api, the sweeper and two prefork workers. While the producer runs, a fault driver
SIGKILLs random workers mid-batch (and starts replacements, as a supervisor would),
SIGKILLs Redis and restarts it from its AOF, and makes the sandbox answer 503s, 429s,
5xx sequences and too slowly (upstream timeouts); about 0.5 % of the ops are poison the
sandbox refuses (207 or whole-batch 400). Both lanes are mixed: half the people send
Track v2 ops, half Pipelines calls (`/v1/batch`, strict mode upstream). Then faults
stop, the stack drains, and `bench.chaos_report` reconciles the producer's acknowledged
ops with the sandbox and the dead-letter stream. The exit status is 1 when anything was
lost or reordered.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.chaos_producer import Ledger, produce
from bench.chaos_report import (
    Arrival,
    ChaosReport,
    FaultEvent,
    dead_letter_ids,
    op_id_of,
    reconcile,
)
from service import keys
from tests.support.processes import Proc
from tests.support.stack import INGEST_KEY, SITE_ID, Stack

UPSTREAM_TIMEOUT_S = 2.0
LEASE_MS = 3000
BASELINE_FAULTS: dict[str, Any] = {"latency_ms": 30}

#: The first faults of every run, so even a short run meets each kind at least once.
SCRIPT = (
    "kill_worker",
    "sandbox_503",
    "kill_redis",
    "sandbox_429",
    "kill_worker",
    "sandbox_timeout",
    "sandbox_5xx_sequence",
)
SANDBOX_FAULTS: dict[str, dict[str, Any]] = {
    "sandbox_503": {"error_rate": 0.5, "error_status": 503, "latency_ms": 30},
    "sandbox_429": {"error_rate": 0.4, "error_status": 429, "retry_after_s": 0.5},
    "sandbox_timeout": {"latency_ms": int(UPSTREAM_TIMEOUT_S * 1000) + 1000},
    "sandbox_5xx_sequence": {"status_sequence": [500, 502, 504, 500, 503], "latency_ms": 30},
}
RANDOM_ACTIONS = ("kill_worker", "kill_worker", "kill_redis", *SANDBOX_FAULTS)


@dataclass(frozen=True)
class ChaosConfig:
    ops: int = 100_000
    people: int = 2000
    rate_per_s: float = 800.0
    poison_share: float = 0.005
    fault_interval_s: float = 4.0
    workers: int = 2
    worker_concurrency: int = 2
    settle_timeout_s: float = 600.0
    seed: int = 1


class FaultDriver:
    """Injects faults on a thread until stopped; supervises workers like a process manager."""

    def __init__(self, stack: Stack, config: ChaosConfig) -> None:
        self.stack = stack
        self.config = config
        self.rng = random.Random(config.seed)
        self.events: list[FaultEvent] = []
        self.script = deque(SCRIPT)
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.started = 0
        self.thread = threading.Thread(target=self._run, name="chaos-faults", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        """Stop injecting once the scripted faults ran; leave the stack healthy."""
        while self.script and self.thread.is_alive():
            time.sleep(0.2)
        self.stop.set()
        self.thread.join(120)
        self._sandbox_faults({})
        self.supervise()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.supervise()
                action = self.script.popleft() if self.script else self.rng.choice(RANDOM_ACTIONS)
                self._do(action)
            except Exception as exc:  # a fault that could not be injected is reported
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.stop.wait(self.rng.uniform(0.5, 1.5) * self.config.fault_interval_s)

    def _do(self, action: str) -> None:
        start_s = time.time()
        if action == "kill_worker":
            alive = [w for w in self.stack.workers if w.alive()]
            if alive:
                self.rng.choice(alive).kill()
            self._start_worker()
        elif action == "kill_redis":
            proc = self.stack.redis.proc
            assert proc is not None
            proc.kill()
            time.sleep(self.rng.uniform(0.3, 1.5))  # Redis stays down for a moment
            self.stack.redis.start()
        else:
            self._sandbox_faults(SANDBOX_FAULTS[action])
            time.sleep(self.rng.uniform(1.0, 3.0) + (2 if action == "sandbox_timeout" else 0))
            self._sandbox_faults(BASELINE_FAULTS)
        self.events.append(FaultEvent(action, start_s, time.time()))

    def supervise(self) -> None:
        """Replace exited workers, as Kubernetes or systemd would."""
        for worker in list(self.stack.workers):
            if not worker.alive():
                self.stack.workers.remove(worker)
        while len(self.stack.workers) < self.config.workers:
            self._start_worker()

    def _start_worker(self) -> Proc:
        self.started += 1
        worker = self.stack.start(
            f"chaos-worker{self.started}",
            ["worker", f"--concurrency={self.config.worker_concurrency}", "--pool=prefork"],
        )
        self.stack.workers.append(worker)
        return worker

    def _sandbox_faults(self, faults: dict[str, Any]) -> None:
        with self.stack.sandbox_client() as client:
            client.post("/_sandbox/faults", json=faults).raise_for_status()


class Outcome:
    """Reads the sandbox's recordings incrementally and the dead-letter stream in full."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.arrivals: list[Arrival] = []
        self.cursor = 0

    def refresh(self) -> None:
        with self.stack.sandbox_client() as client:
            while True:
                page = client.get("/_sandbox/received", params={"after": self.cursor}).json()
                for record in page["records"]:
                    chaos_kind = record["kind"] in ("v2", "cdp")
                    op_id = op_id_of(record["op"]) if chaos_kind else None
                    if op_id is not None:
                        self.arrivals.append(Arrival(op_id, float(record["received_at"])))
                if not page["records"]:
                    return
                self.cursor = page["next"]

    def dead(self) -> dict[tuple[str, int], str]:
        client = redis.Redis(port=self.stack.redis.port)
        try:
            return dead_letter_ids(client.xrange(keys.dead_letters("default")))
        finally:
            client.close()


def _settle(outcome: Outcome, ledger: Ledger, timeout_s: float) -> None:
    """Wait until every accepted op is delivered or dead-lettered, or the time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        outcome.refresh()
        done = {a.op_id for a in outcome.arrivals} | set(outcome.dead())
        if set(ledger.accepted) <= done or time.monotonic() > deadline:
            return
        time.sleep(1.0)


def run(config: ChaosConfig, workdir: Path) -> ChaosReport:
    """One chaos run in `workdir`; the stack is torn down before returning."""
    stack = Stack(
        workdir,
        redis_fsync="always",
        durability="fsync",
        lease_ms=LEASE_MS,
        allow_short_lease=True,  # fast takeovers after each kill, on purpose
        upstream_timeout_s=UPSTREAM_TIMEOUT_S,
        retry_base_ms=50,
        retry_cap_ms=2000,
        throttle_pause_ms=500,
        setup_pause_ms=1000,
        backlog_refresh_ms=200,
    )
    try:
        stack.start_api()
        stack.start_sweeper()
        for _ in range(config.workers):
            stack.start_worker(concurrency=config.worker_concurrency)
        with httpx.Client(base_url=stack.sandbox_url) as client:
            client.post("/_sandbox/faults", json=BASELINE_FAULTS).raise_for_status()
        driver = FaultDriver(stack, config)
        started_s = time.monotonic()
        driver.start()
        ledger = asyncio.run(
            produce(
                stack.api_url,
                (SITE_ID, INGEST_KEY),
                ops=config.ops,
                people=config.people,
                rate_per_s=config.rate_per_s,
                poison_share=config.poison_share,
                seed=config.seed,
            )
        )
        driver.finish()
        run_s = time.monotonic() - started_s
        outcome = Outcome(stack)
        _settle(outcome, ledger, config.settle_timeout_s)
        report = reconcile(
            config.ops,
            ledger,
            outcome.arrivals,
            outcome.dead(),
            driver.events,
            lease_s=LEASE_MS / 1000,
        )
        report.run_s = run_s
        report.settle_s = time.monotonic() - started_s - run_s
        report.rejected += [f"fault driver: {e}" for e in driver.errors]
        return report
    finally:
        stack.close()


def main(argv: list[str] | None = None) -> int:
    defaults = ChaosConfig()
    parser = argparse.ArgumentParser(prog="bench.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=defaults.ops)
    parser.add_argument("--people", type=int, default=defaults.people)
    parser.add_argument("--rate", type=float, default=defaults.rate_per_s, help="ops per second")
    parser.add_argument("--fault-interval", type=float, default=defaults.fault_interval_s)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs here")
    args = parser.parse_args(argv)
    config = ChaosConfig(
        ops=args.ops,
        people=args.people,
        rate_per_s=args.rate,
        fault_interval_s=args.fault_interval,
        seed=args.seed,
    )
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = run(config, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="cioq-chaos-") as tmp:
            report = run(config, Path(tmp))
    print(report.render())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
