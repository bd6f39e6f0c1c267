"""The whole cioq stack as real processes, for end-to-end tests."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.cluster import Cluster
from tests.support.processes import Proc, RedisServer, cioq_proc, free_port, wait_http

SITE_ID = "e2e-site"
API_KEY = "e2e-api-key"
INGEST_KEY = "e2e-ingest-key"
CDP_KEY = "e2e-cdp-key"
ADMIN_KEY = "e2e-admin-key"
APP_KEY = "e2e-app-key"


class Stack:
    """redis-server + sandbox + api + sweeper (+ workers on demand), torn down together."""

    def __init__(
        self,
        tmp: Path,
        *,
        redis_fsync: str = "everysec",
        cluster: Cluster | None = None,
        sandbox_args: tuple[str, ...] = (),
        sites: dict[str, str] | None = None,
        **settings: Any,
    ) -> None:
        """With a `cluster`, it is the store and the stack's own Redis is the broker.

        `sites`: more site id → API key pairs the sandbox accepts (other workspaces).
        """
        self.tmp = tmp
        self.redis = RedisServer(tmp / "redis", appendonly=True, fsync=redis_fsync)
        self.sandbox_port = free_port()
        self.api_port = free_port()
        self.env = {
            **os.environ,
            "CIOQ_REDIS_URL": self.redis.url,
            "CIOQ_SITE_ID": SITE_ID,
            "CIOQ_API_KEY": API_KEY,
            "CIOQ_INGEST_KEYS": INGEST_KEY,
            "CIOQ_TRACK_URL": f"http://127.0.0.1:{self.sandbox_port}",
            "CIOQ_CDP_API_KEY": CDP_KEY,
            "CIOQ_CDP_URL": f"http://127.0.0.1:{self.sandbox_port}",
            "CIOQ_APP_API_KEY": APP_KEY,
            "CIOQ_APP_URL": f"http://127.0.0.1:{self.sandbox_port}",
            "CIOQ_SHARDS": "8",
            "CIOQ_LINGER_MS": "200",
            "CIOQ_LEASE_MS": "3000",
            # Short on purpose: a killed worker's shards are taken over within seconds.
            "CIOQ_ALLOW_SHORT_LEASE": "true",
            "CIOQ_SWEEP_INTERVAL_MS": "250",
            # The sweeper's poller of late failures reads the sandbox's activity log only in
            # the tests that ask for it (late_poll_interval_s=...): the others count requests.
            "CIOQ_LATE_POLL_INTERVAL_S": "86400",
            "PORT": str(self.api_port),
            # Not the defaults (9100, 9101): stacks of parallel tests would share them.
            "CIOQ_WORKER_METRICS_PORT": str(free_port()),
            "CIOQ_SWEEPER_METRICS_PORT": str(free_port()),
        }
        if cluster is not None:
            self.env["CIOQ_REDIS_URL"] = cluster.url
            self.env["CIOQ_REDIS_CLUSTER"] = "true"
            self.env["CIOQ_BROKER_URL"] = self.redis.url
        self.env.update({f"CIOQ_{k.upper()}": str(v) for k, v in settings.items()})
        self.procs: list[Proc] = []
        self.sandbox = self.start(
            "sandbox",
            [
                "sandbox",
                "--port",
                str(self.sandbox_port),
                "--site-id",
                SITE_ID,
                "--api-key",
                API_KEY,
                "--write-key",
                CDP_KEY,
                "--app-key",
                APP_KEY,
                *sandbox_args,
                *(
                    arg
                    for site, key in (sites or {}).items()
                    for arg in ("--site-id", site, "--api-key", key)
                ),
            ],
        )
        # Waited for on first use: the api and sweeper start meanwhile (each process's start
        # is a second or two under coverage, and a stack starts three or four).
        self._sandbox_up = False
        self.api: Proc | None = None
        self.sweeper: Proc | None = None
        self.workers: list[Proc] = []

    @property
    def sandbox_url(self) -> str:
        """The sandbox's URL, once it answers."""
        url = f"http://127.0.0.1:{self.sandbox_port}"
        if not self._sandbox_up:
            wait_http(f"{url}/healthz")
            self._sandbox_up = True
        return url

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = cioq_proc(name, args, env or self.env, self.tmp)
        self.procs.append(proc)
        return proc

    def start_api(
        self, env: dict[str, str] | None = None, scheme: str = "http", verify: bool | str = True
    ) -> Proc:
        self.api = self.start("api", ["api"], env)
        _ = self.sandbox_url  # the api's start overlaps the sandbox's
        wait_http(f"{scheme}://127.0.0.1:{self.api_port}/healthz", verify=verify)
        return self.api

    def start_sweeper(self) -> Proc:
        self.sweeper = self.start("sweeper", ["sweeper"])
        return self.sweeper

    def start_worker(self, concurrency: int = 2, pool: str = "prefork") -> Proc:
        n = len(self.workers)
        worker = self.start(
            f"worker{n}", ["worker", f"--concurrency={concurrency}", f"--pool={pool}"]
        )
        self.workers.append(worker)
        return worker

    def sandbox_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.sandbox_url, timeout=30)

    def received(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        with self.sandbox_client() as client:
            after = 0
            while True:
                page = client.get("/_sandbox/received", params={"after": after}).json()
                records.extend(page["records"])
                if not page["records"]:
                    return records
                after = page["next"]

    def received_at_least(self, count: int) -> list[dict[str, Any]]:
        """Everything received once there are `count` records or more, else [] (for polling)."""
        records = self.received()
        return records if len(records) >= count else []

    def received_from(self, site_id: str) -> list[dict[str, Any]]:
        """The ops the sandbox accepted from one site, in arrival order."""
        records: list[dict[str, Any]] = []
        with self.sandbox_client() as client:
            after = 0
            while True:
                page = client.get(
                    "/_sandbox/received",
                    params={"after": after, "site_id": site_id, "limit": 50_000},
                ).json()
                records.extend(page["records"])
                if not page["records"]:
                    return records
                after = page["next"]

    def requests(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with self.sandbox_client() as client:
            after = 0
            while True:
                page = client.get("/_sandbox/requests", params={"after": after}).json()
                out.extend(page["records"])
                if not page["records"]:
                    return out
                after = page["next"]

    def logs(self) -> str:
        return "\n".join(f"===== {p.name}\n{p.log()[-4000:]}" for p in self.procs)

    def close(self) -> None:
        # cioq's processes all at once (one by one, each waited out its shutdown in turn),
        # then what they talk to: a worker finishing a send needs the sandbox and Redis.
        ours = [proc for proc in reversed(self.procs) if proc is not self.sandbox]
        for proc in ours:
            proc.terminate()
        deadline = time.monotonic() + 10
        for proc in ours:
            proc.stop(timeout_s=max(0.1, deadline - time.monotonic()))
        self.sandbox.stop(timeout_s=10)
        self.redis.stop()
