"""Acceptance 3 of issue 22, in real processes: keyed App sends, each POSTed by several
producers at once, while the sandbox fails sends ambiguously and with 503s, workers are
SIGKILLed on a timer and Redis is SIGKILLed once and restarted from its AOF.

`run` drives it and returns the evidence; the test (short form) and ``scripts/never-twice``
(full form) check it.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from tests.support.app_load import Settled, dead_letters, send_body, settle
from tests.support.stack import INGEST_KEY, Stack

FAULTS = {
    "hang_rate": 0.04,
    "reset_rate": 0.03,
    "reset_before_rate": 0.03,
    "error_rate": 0.10,
    "error_status": 503,
    "retry_after_s": 0.2,
    "hang_s": 3,
    "seed": 22,
}
PRODUCERS = 4


@dataclass
class Evidence:
    settled: Settled
    job_ids: list[str]  # by send number
    answers: dict[int, set[str]]  # send number -> the job ids its producers were given
    server_errors: list[tuple[float, int]] = field(default_factory=list)  # (time, status)
    redis_down: tuple[float, float] = (0.0, 0.0)  # killed at, answering again at
    kills: int = 0
    letters_per_job: Counter[str] = field(default_factory=Counter)


class _Chaos:
    """SIGKILLs a random worker every `kill_every_s` (and starts a replacement); once,
    when `restart_redis` is set, SIGKILLs Redis and restarts it from its AOF."""

    def __init__(self, stack: Stack, kill_every_s: float, workers: int) -> None:
        self.stack = stack
        self.kill_every_s = kill_every_s
        self.workers = workers
        self.rng = random.Random(22)
        self.stop = threading.Event()
        self.kills = 0
        self.redis_down = (0.0, 0.0)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.kill_every_s):
            alive = [w for w in self.stack.workers if w.alive()]
            if alive:
                victim = self.rng.choice(alive)
                victim.kill()
                self.stack.workers.remove(victim)
                self.kills += 1
            while len(self.stack.workers) < self.workers:
                self.stack.start_worker(concurrency=2)

    def restart_redis(self) -> None:
        proc = self.stack.redis.proc
        assert proc is not None
        down_at = time.time()
        proc.kill()
        time.sleep(1.0)
        self.stack.redis.start()
        self.redis_down = (down_at, time.time())


def run(stack: Stack, tag: str, sends: int, *, kill_every_s: float = 5.0) -> Evidence:
    workers = 2
    for _ in range(workers):
        stack.start_worker(concurrency=2)
    with stack.sandbox_client() as sandbox:
        sandbox.post("/_sandbox/app_faults", json=FAULTS).raise_for_status()
    chaos = _Chaos(stack, kill_every_s, workers)
    chaos.thread.start()
    answers: dict[int, set[str]] = {n: set() for n in range(sends)}
    server_errors: list[tuple[float, int]] = []
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {INGEST_KEY}", "Prefer": "respond-async"}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as api:

        def produce(n: int) -> None:
            # A producer resends on 5xx and on a broken link, as the official clients do.
            key = {"Idempotency-Key": f"{tag}-{n}"}
            for _ in range(200):
                try:
                    answer = api.post("/v1/send/email", json=send_body(tag, n), headers=key)
                except httpx.TransportError:
                    time.sleep(0.2)
                    continue
                if answer.status_code >= 500:
                    with lock:
                        server_errors.append((time.time(), answer.status_code))
                    time.sleep(0.2)
                    continue
                assert answer.status_code == 202, answer.text
                with lock:
                    answers[n].add(str(answer.json()["job_id"]))
                return
            raise AssertionError(f"send {n} was never accepted")

        with ThreadPoolExecutor(PRODUCERS * 4) as pool:
            futures = []
            for n in range(sends):
                futures += [pool.submit(produce, n) for _ in range(PRODUCERS)]
                if n == sends // 3:
                    pool.submit(chaos.restart_redis)
            for future in futures:
                future.result()
    job_ids = [min(answers[n]) for n in range(sends)]
    try:
        settled = settle(stack, tag, job_ids, timeout_s=60 + sends * 0.3)
    finally:
        chaos.stop.set()
        chaos.thread.join(30)
    letters: Counter[str] = Counter()
    with httpx.Client(base_url=stack.api_url, timeout=30) as api:
        for letter in dead_letters(api, stack):
            if letter["lane"] == "app":
                letters[letter["payload"]["id"]] += 1
    return Evidence(
        settled, job_ids, answers, server_errors, chaos.redis_down, chaos.kills, letters
    )


def violations(evidence: Evidence) -> list[str]:
    """What broke the promise; empty when it held."""
    found: list[str] = []
    got = evidence.settled
    for n, job_id in enumerate(evidence.job_ids):
        if len(evidence.answers[n]) != 1:
            found.append(f"send {n}: producers got {sorted(evidence.answers[n])}")
        arrivals = got.arrivals[n]
        state = got.outcomes[job_id]["state"]
        if arrivals > 1:
            found.append(f"send {n}: arrived {arrivals} times")
        if arrivals == 0 and (state != "ambiguous" or evidence.letters_per_job[job_id] != 1):
            found.append(
                f"send {n}: not arrived, state {state}, {evidence.letters_per_job[job_id]} letters"
            )
        if evidence.letters_per_job[job_id] > 1:
            found.append(f"send {n}: {evidence.letters_per_job[job_id]} letters")
    for at, status in evidence.server_errors:
        # Ingest holds a request while Redis restarts (CIOQ_REDIS_OUTAGE_WAIT_S), so even
        # the restart costs a producer a slower answer, not a 5xx.
        down_at, up_at = evidence.redis_down
        found.append(
            f"a {status} {at - down_at:+.1f} s after Redis's kill "
            f"(it answered again {up_at - down_at:.1f} s after it)"
        )
    return found


def summary(evidence: Evidence) -> str:
    got = evidence.settled
    down_at, up_at = evidence.redis_down
    after_s = max((at - up_at for at, _ in evidence.server_errors), default=0.0)
    states = Counter(o["state"] for o in got.outcomes.values())
    return (
        f"never-twice: {len(evidence.job_ids)} keyed sends x {PRODUCERS} producers, "
        f"{len(got.send_log)} send requests to the sandbox, {evidence.kills} workers SIGKILLed, "
        f"Redis restarted from AOF once ({evidence.redis_down[1] - evidence.redis_down[0]:.1f} s "
        f"down), states {dict(states)}, {sum(got.arrivals.values())} arrived, max arrivals "
        f"{max(got.arrivals.values(), default=0)}, {sum(evidence.letters_per_job.values())} "
        f"App letters, {len(evidence.server_errors)} producer 5xx (Redis down "
        f"{down_at:.1f}..{up_at:.1f}; the last {after_s:+.1f} s after it answered again)"
    )
