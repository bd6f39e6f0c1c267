"""Probes that do not flip every pod on a shared-backend blip, and a worker liveness that
follows the Celery consumer loop. Real processes: redis-server, the api, a worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.paths import ROOT
from tests.support.processes import RedisServer, cioq_proc, free_port, wait_http, wait_until
from tests.support.silent_server import SilentServer

API_MANIFEST = ROOT / "deploy" / "k8s" / "base" / "api.yaml"
WORKER_MANIFEST = ROOT / "deploy" / "k8s" / "base" / "worker.yaml"
SITE_ID = "ready-site"
INGEST_KEY = "ready-ingest-key"


def container(manifest: Path, name: str) -> dict[str, Any]:
    for doc in yaml.safe_load_all(manifest.read_text()):
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == name:
            found: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]
            return found
    raise AssertionError(f"no Deployment {name} in {manifest}")


def test_the_api_stays_ready_and_answers_503_while_redis_is_down(tmp_path: Path) -> None:
    probe = container(API_MANIFEST, "cioq-api")["readinessProbe"]
    # Kubernetes takes a pod out of the Service after failureThreshold failed probes.
    window_s = probe["periodSeconds"] * probe["failureThreshold"]
    probe_timeout_s = probe["timeoutSeconds"]
    redis_server = RedisServer(tmp_path / "redis")
    port = free_port()
    env = {
        **os.environ,
        "CIOQ_REDIS_URL": redis_server.url,
        "CIOQ_SITE_ID": SITE_ID,
        "CIOQ_INGEST_KEYS": INGEST_KEY,
        "CIOQ_REDIS_TIMEOUT_S": "1",
        "PORT": str(port),
    }
    api = cioq_proc("api", ["api"], env, tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz")
        with httpx.Client(base_url=base, auth=(SITE_ID, INGEST_KEY), timeout=10) as client:
            accepted = client.post("/api/v1/customers/1/events", json={"name": "before"})
            assert accepted.status_code == 200, accepted.text
            redis_server.proc.kill()  # type: ignore[union-attr]

            # Longer than the probe could fail before the pod left the Service.
            deadline = time.monotonic() + window_s + probe["periodSeconds"]
            probes = rejected = 0
            while time.monotonic() < deadline:
                ready = client.get("/readyz", timeout=probe_timeout_s)
                assert ready.status_code == 200, ready.text
                probes += 1
                r = client.post("/api/v1/customers/1/events", json={"name": "during"})
                assert r.status_code == 503, r.text
                assert int(r.headers["retry-after"]) >= 1
                assert r.json()["errors"][0]["field"] == "store"
                rejected += 1
                time.sleep(probe["periodSeconds"] / 5)
            assert probes >= 5 and rejected == probes

            # Redis back (empty: this one kept no AOF) and ingest accepts again by itself.
            redis_server.start()

            def accepts() -> bool:
                r = client.post("/api/v1/customers/1/events", json={"name": "after"})
                return r.status_code == 200

            wait_until(accepts, timeout_s=30, interval_s=0.2, what="ingest to accept again")
    except BaseException:
        print(api.log()[-4000:])
        raise
    finally:
        api.stop()
        redis_server.stop()


def probe_passes(env: dict[str, str], max_age_s: float) -> bool:
    check = [sys.executable, "-m", "workers.liveness", "--role", "worker"]
    result = subprocess.run([*check, "--max-age-s", str(max_age_s)], env=env, check=False)
    return result.returncode == 0


def test_worker_liveness_follows_the_consumer_loop_not_the_metrics_thread(
    tmp_path: Path,
) -> None:
    command = container(WORKER_MANIFEST, "cioq-worker")["livenessProbe"]["exec"]["command"]
    assert command[:5] == ["python", "-m", "workers.liveness", "--role", "worker"]
    redis_server = RedisServer(tmp_path / "redis")
    upstream = SilentServer()  # a Customer.io a drain hangs on
    metrics_port = free_port()
    api_port = free_port()
    env = {
        **os.environ,
        "TMPDIR": str(tmp_path),
        "CIOQ_REDIS_URL": redis_server.url,
        "CIOQ_SITE_ID": SITE_ID,
        "CIOQ_INGEST_KEYS": INGEST_KEY,
        "CIOQ_TRACK_URL": f"http://127.0.0.1:{upstream.port}",
        "CIOQ_UPSTREAM_TIMEOUT_S": "15",
        "CIOQ_LINGER_MS": "0",
        "CIOQ_WORKER_METRICS_PORT": str(metrics_port),
        "PORT": str(api_port),
    }
    heartbeat = tmp_path / "cioq-worker-heartbeat"
    # The solo pool runs a drain inside the consumer loop itself, so a hanging drain stands
    # for a wedged loop; the metrics thread is untouched by it.
    worker = cioq_proc("worker", ["worker", "--concurrency=1", "--pool=solo"], env, tmp_path)
    api = cioq_proc("api", ["api"], env, tmp_path)
    try:
        assert not probe_passes(env, 60), "no heartbeat before the consumer runs"
        wait_until(heartbeat.exists, timeout_s=60, interval_s=0.2, what="the first heartbeat")
        first_s = heartbeat.stat().st_mtime
        # The consumer's timer keeps touching it: a later beat than the first.
        wait_until(
            lambda: heartbeat.stat().st_mtime > first_s, timeout_s=30, interval_s=0.2, what="beat"
        )
        assert probe_passes(env, 10)

        wait_http(f"http://127.0.0.1:{api_port}/healthz")
        r = httpx.post(
            f"http://127.0.0.1:{api_port}/api/v1/customers/1/events",
            json={"name": "hangs"},
            auth=(SITE_ID, INGEST_KEY),
        )
        assert r.status_code == 200, r.text
        wait_until(lambda: upstream.held, timeout_s=30, interval_s=0.1, what="the drain's POST")
        # The loop is stuck in the drain: the file goes stale while /metrics still answers.
        wait_until(lambda: not probe_passes(env, 5), timeout_s=12, interval_s=0.5, what="stale")
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        assert metrics.status_code == 200
        # The upstream times out, the drain schedules a retry, the loop turns again.
        wait_until(lambda: probe_passes(env, 5), timeout_s=40, interval_s=0.5, what="recovery")
    except BaseException:
        print(worker.log()[-4000:])
        raise
    finally:
        api.stop()
        worker.stop()
        upstream.close()
        redis_server.stop()
