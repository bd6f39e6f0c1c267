"""Processes a benchmark needs: its own redis-server, sandbox, api, baseline app, workers.

Everything listens on 127.0.0.1 on free ports and is stopped when the `BenchStack`
closes; nothing touches the Redis on 6379.
"""

from __future__ import annotations

import base64
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis

from service import keys
from service.jobs import Job, Lane, shard_for
from service.lanes.track.jobs import v2_job
from tests.support.cluster import Cluster
from tests.support.processes import Proc, RedisServer, cioq_proc, free_port, wait_http

SITE_ID = "bench-site"
API_KEY = "bench-api-key"
INGEST_KEY = "bench-ingest-key"
CDP_KEY = "bench-cdp-key"
APP_KEY = "bench-app-key"
AUTH_HEADER = "Basic " + base64.b64encode(f"{SITE_ID}:{INGEST_KEY}".encode()).decode()


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and all its descendants (a prefork worker's children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class BenchStack:
    """A redis-server plus whatever processes a figure starts, torn down together."""

    def __init__(self, tmp: Path, *, cluster: Cluster | None = None, **settings: Any) -> None:
        """With a `cluster`, it is the store and the stack's own Redis is the broker."""
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(tmp / "redis")
        self.cluster = cluster
        self.procs: list[Proc] = []
        self.env = {
            **os.environ,
            "CIOQ_REDIS_URL": self.redis.url,
            "CIOQ_SITE_ID": SITE_ID,
            "CIOQ_API_KEY": API_KEY,
            "CIOQ_INGEST_KEYS": INGEST_KEY,
            "CIOQ_CDP_API_KEY": CDP_KEY,
            "CIOQ_APP_API_KEY": APP_KEY,
            "CIOQ_SHARDS": "32",
            "CIOQ_BACKLOG_MAX_ENTRIES": "100000000",
            "CIOQ_BACKLOG_MAX_AGE_S": "86400",
        }
        if cluster is not None:
            self.env["CIOQ_REDIS_URL"] = cluster.url
            self.env["CIOQ_REDIS_CLUSTER"] = "true"
            self.env["CIOQ_BROKER_URL"] = self.redis.url
        self.env.update({f"CIOQ_{k.upper()}": str(v) for k, v in settings.items()})
        self.sandbox_port = 0

    def client(self) -> redis.Redis | redis.RedisCluster:
        """A client of the store: the stack's Redis, or the cluster."""
        return self.cluster.client() if self.cluster else self.redis.client()

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, argv, env or self.env, self.tmp)
        self.procs.append(proc)
        return proc

    def start_sandbox(
        self,
        *,
        record: str = "count",
        latency_ms: int = 0,
        tls: tuple[str, str] | None = None,
        app_send_rps: int | None = None,
    ) -> str:
        port = free_port()
        argv = [sys.executable, "-m", "bench.sandbox", "--port", str(port)]
        argv += ["--site-id", SITE_ID, "--api-key", API_KEY, "--write-key", CDP_KEY]
        argv += ["--app-key", APP_KEY]
        argv += ["--record", record]
        if app_send_rps is not None:
            argv += ["--app-send-rps", str(app_send_rps)]
        if tls:
            argv += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        self.start(f"sandbox-{port}", argv)
        scheme = "https" if tls else "http"
        url = f"{scheme}://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", verify=not tls)
        if latency_ms:
            httpx.post(f"{url}/_sandbox/faults", json={"latency_ms": latency_ms}, verify=False)
        if not tls:
            self.env["CIOQ_TRACK_URL"] = url
            self.env["CIOQ_CDP_URL"] = url
            self.env["CIOQ_APP_URL"] = url
            self.sandbox_port = port
        return url

    def start_api(self) -> int:
        port = free_port()
        env = {**self.env, "PORT": str(port)}
        self.procs.append(cioq_proc("api", ["api", "--log-level", "warning"], env, self.tmp))
        wait_http(f"http://127.0.0.1:{port}/healthz")
        return port

    def start_starlette_app(self) -> int:
        """cioq's ingest through Starlette (bench/starlette_app.py), on this stack's settings."""
        port = free_port()
        self.start("starlette", [sys.executable, "-m", "bench.starlette_app", "--port", str(port)])
        wait_http(f"http://127.0.0.1:{port}/healthz")
        return port

    def start_bare_app(self, *, store: bool = True) -> int:
        port = free_port()
        argv = [sys.executable, "-m", "bench.bare_app", "--port", str(port)]
        self.start(
            "bare", [*argv, "--redis-url", self.redis.url, *([] if store else ["--no-store"])]
        )
        wait_http(f"http://127.0.0.1:{port}/")
        return port

    def start_worker(self, *, concurrency: int = 1, pool: str = "solo", **settings: Any) -> Proc:
        args = ["worker", f"--concurrency={concurrency}", f"--pool={pool}", "--log-level=warning"]
        env = {**self.env, **{f"CIOQ_{k.upper()}": str(v) for k, v in settings.items()}}
        proc = cioq_proc(f"worker{len(self.procs)}", args, env, self.tmp)
        self.procs.append(proc)
        return proc

    def start_sweeper(self) -> Proc:
        proc = cioq_proc("sweeper", ["sweeper", "--log-level", "warning"], self.env, self.tmp)
        self.procs.append(proc)
        return proc

    def fill(
        self,
        ops: list[dict[str, Any]],
        *,
        copies: int = 1,
        shards: int = 32,
        make_job: Callable[[dict[str, Any]], Job] = v2_job,
    ) -> int:
        """Put `ops` (repeated `copies` times) straight into their lane's shard streams."""
        client = self.client()
        jobs = [make_job(op) for op in ops]
        placed = [
            (
                keys.shard_keys(
                    "default", shard_for("default", job.route, shards), job.lane
                ).stream,
                job,
            )
            for job in jobs
        ]
        total = 0
        for _ in range(copies):
            pipe = client.pipeline(transaction=False)
            for n, (stream, job) in enumerate(placed, 1):
                pipe.xadd(stream, {job.field: job.payload})
                if n % 5000 == 0:
                    pipe.execute()
            pipe.execute()
            total += len(placed)
        client.close()
        return total

    def backlog(self, shards: int = 32, lane: Lane = Lane.TRACK) -> int:
        client = self.client()
        pipe = client.pipeline(transaction=False)
        for shard in range(shards):
            pipe.xlen(keys.shard_keys("default", shard, lane).stream)
        total = sum(pipe.execute())
        client.close()
        return int(total)

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop(timeout_s=10)
        self.redis.stop()


def sandbox_stats(url: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{url}/_sandbox/stats", timeout=30, verify=False).json()
    return stats


def sandbox_requests(url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    with httpx.Client(base_url=url, timeout=60, verify=False) as client:
        while True:
            page = client.get("/_sandbox/requests", params={"after": after, "limit": 5000}).json()
            out.extend(page["records"])
            if not page["records"]:
                return out
            after = page["next"]


def wait_for(check: Any, *, timeout_s: float, interval_s: float = 0.2) -> float:
    """Poll `check` until truthy; returns the time it took. Raises TimeoutError."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"gave up after {timeout_s}s")
        time.sleep(interval_s)
    return time.monotonic() - start
