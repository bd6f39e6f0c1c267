"""cioq vs the naive design (a Celery task per event through the official SDK).

Both get the same number of worker processes and a sandbox that answers after 50 ms;
both start from a backlog. Figures: ops/s and upstream requests per op.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import trustme

from bench.drain import SHARDS, event_op, fill
from bench.figures import Figure
from bench.stack import API_KEY, SITE_ID, BenchStack, sandbox_stats

LATENCY_MS = 50
WORKERS = 2


def _tls(tmp: Path) -> tuple[str, str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = tmp / "cert.pem", tmp / "key.pem", tmp / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(paths[0]))
    cert.private_key_pem.write_to_path(str(paths[1]))
    ca.cert_pem.write_to_path(str(paths[2]))
    return str(paths[0]), str(paths[1]), str(paths[2])


def _naive(stack: BenchStack, events: int, timeout_s: float) -> tuple[float, int, int]:
    """(ops/s, upstream requests, ops delivered) for the naive design."""
    cert, key, ca = _tls(stack.tmp)
    url = stack.start_sandbox(record="count", latency_ms=LATENCY_MS, tls=(cert, key))
    port = url.rsplit(":", 1)[1]
    from bench.naive_app import app

    app.conf.update(broker_url=stack.redis.url)
    with app.connection_for_write() as conn:
        for i in range(events):
            op = event_op(i)
            app.send_task(
                "naive.track",
                args=(op["identifiers"]["id"], op["name"], op["attributes"]),
                connection=conn,
            )
    env = {
        **stack.env,
        "BENCH_BROKER_URL": stack.redis.url,
        "BENCH_TRACK_PORT": port,
        "BENCH_SITE_ID": SITE_ID,
        "BENCH_API_KEY": API_KEY,
        "REQUESTS_CA_BUNDLE": ca,
    }
    argv = [sys.executable, "-m", "celery", "-A", "bench.naive_app", "worker"]
    argv += [f"--concurrency={WORKERS}", "--pool=prefork", "--loglevel=warning"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    worker = stack.start("naive-worker", argv, env)
    first: tuple[float, int] | None = None
    deadline = time.monotonic() + timeout_s
    while True:
        stats = sandbox_stats(url)
        done = stats["v1_accepted"] + stats["ops_accepted"]
        now = time.monotonic()
        if first is None and done:
            first = (now, done)
        if done >= events or now > deadline:
            break
        time.sleep(0.2)
    worker.stop()
    stats = sandbox_stats(url)
    t0, d0 = first or (now, 0)
    return (done - d0) / max(now - t0, 1e-9), stats["requests"], done


def _cioq(stack: BenchStack, ops: int, timeout_s: float) -> tuple[float, int, int]:
    url = stack.start_sandbox(record="count", latency_ms=LATENCY_MS)
    fill(stack, [event_op(i) for i in range(20_000)], ops)
    worker = stack.start_worker(concurrency=WORKERS, pool="prefork")
    sweeper = stack.start_sweeper()
    first: tuple[float, int] | None = None
    deadline = time.monotonic() + timeout_s
    while True:
        done = sandbox_stats(url)["ops_accepted"]
        now = time.monotonic()
        if first is None and done:
            first = (now, done)
        if done >= ops or now > deadline:
            break
        time.sleep(0.2)
    worker.stop()
    sweeper.stop()
    t0, d0 = first or (now, 0)
    return (done - d0) / max(now - t0, 1e-9), sandbox_stats(url)["requests"], done


def run(tmp: Path, *, quick: bool) -> list[Figure]:
    events = 400 if quick else 2_000
    ops = 100_000 if quick else 500_000
    stack = BenchStack(tmp / "naive", shards=SHARDS)
    try:
        naive_rate, naive_requests, naive_done = _naive(stack, events, timeout_s=60 + events / 5)
        cioq_rate, cioq_requests, cioq_done = _cioq(stack, ops, timeout_s=600)
    finally:
        stack.close()
    naive_per_op = naive_requests / max(naive_done, 1)
    cioq_per_op = cioq_requests / max(cioq_done, 1)
    fewer = naive_per_op / cioq_per_op if cioq_per_op else float("inf")
    note = f"{WORKERS} worker processes each, upstream latency {LATENCY_MS} ms"
    return [
        Figure(
            "vs naive: throughput",
            cioq_rate,
            "ops/s",
            "Celery task per event + SDK",
            naive_rate,
            ">= 20x",
            cioq_rate >= 20 * naive_rate,
            note,
        ),
        Figure(
            "vs naive: upstream requests per 1,000 ops",
            1000 * cioq_per_op,
            "req",
            "Celery task per event + SDK",
            1000 * naive_per_op,
            ">= 100x fewer",
            fewer >= 100,
            f"{cioq_requests} vs {naive_requests} requests",
            invert=True,
        ),
    ]
