"""Deployment files: Kubernetes (the rendered staging overlay), KEDA, compose, Procfile."""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from service.config import setting_fields
from tests.support.k8s import find, named, render
from tests.support.paths import ROOT
from tests.support.processes import cioq_proc, wait_until
from workers import liveness

KEDA_SCHEMA = ROOT / "deploy" / "k8s" / "schemas" / "scaledobject-keda-v1alpha1.json"


@pytest.fixture(scope="module")
def staging(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The staging overlay as kubectl renders it (test_k8s_render.py checks all of it)."""
    return render("staging", tmp_path_factory.mktemp("staging"))


def validate_keda(doc: dict[str, Any]) -> None:
    schema = json.loads(KEDA_SCHEMA.read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda d: d["spec"].update(maxReplicas=3), "misspelt field"),
        (lambda d: d["spec"].pop("scaleTargetRef"), "no scale target"),
        (lambda d: d["spec"]["triggers"][0]["metadata"].update(threshold=30), "non-string"),
        (lambda d: d["spec"]["triggers"][0].update(metricType="Average"), "unknown type"),
    ],
)
def test_keda_schema_refuses_broken_scaled_objects(
    staging: list[dict[str, Any]], mutate: Any, why: str
) -> None:
    doc = copy.deepcopy(find(staging, "ScaledObject", "cioq-worker"))
    validate_keda(doc)
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate_keda(doc)


def _config(docs: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = named(docs, "ConfigMap", "cioq-config-")["data"]
    return data


def _args(deployment: dict[str, Any]) -> list[str]:
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_worker_grace_period_covers_the_warm_shutdown(staging: list[dict[str, Any]]) -> None:
    spec = find(staging, "Deployment", "cioq-worker")["spec"]["template"]["spec"]
    config = _config(staging)
    grace_s = float(config["CIOQ_SHUTDOWN_GRACE_S"])
    assert grace_s + 5 <= spec["terminationGracePeriodSeconds"] <= grace_s + 30
    container = spec["containers"][0]
    port = int(config["CIOQ_WORKER_METRICS_PORT"])
    assert container["ports"][0]["containerPort"] == port
    assert config["CIOQ_WORKER_METRICS_HOST"] == "0.0.0.0"


def test_the_sweeper_serves_metrics_on_its_named_port(staging: list[dict[str, Any]]) -> None:
    config = _config(staging)
    spec = find(staging, "Deployment", "cioq-sweeper")["spec"]["template"]["spec"]
    port = int(config["CIOQ_SWEEPER_METRICS_PORT"])
    assert spec["containers"][0]["ports"] == [{"name": "metrics", "containerPort": port}]
    assert config["CIOQ_SWEEPER_METRICS_HOST"] == "0.0.0.0"


def test_keda_scales_the_worker_on_backlog_seconds_within_the_shards(
    staging: list[dict[str, Any]],
) -> None:
    scaled = find(staging, "ScaledObject", "cioq-worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "cioq-worker"
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "prometheus"
    assert "cioq_backlog_seconds" in trigger["metadata"]["query"]
    args = _args(find(staging, "Deployment", "cioq-worker"))
    concurrency = int(args[args.index("--concurrency") + 1])
    # One process drains a shard at a time: more processes than shards would idle.
    assert scaled["maxReplicaCount"] * concurrency <= int(_config(staging)["CIOQ_SHARDS"])


def test_every_setting_in_the_configmap_is_a_real_setting(staging: list[dict[str, Any]]) -> None:
    fields = {f"CIOQ_{name.upper()}" for name in setting_fields()}
    secrets = named(staging, "Secret", "cioq-secrets-")["data"]
    cioq_secrets = {name for name in secrets if name.startswith("CIOQ_")}
    # REDIS_PASSWORD is the bundled Redis's own; everything else is a cioq setting.
    assert set(secrets) - cioq_secrets == {"REDIS_PASSWORD"}
    assert set(_config(staging)) | cioq_secrets <= fields | {"CIOQ_WORKSPACES"}


def test_redis_keeps_an_aof_and_never_evicts(staging: list[dict[str, Any]]) -> None:
    conf = named(staging, "ConfigMap", "cioq-redis-config-")["data"]["redis.conf"].split("\n")
    assert "appendonly yes" in conf
    assert "maxmemory-policy noeviction" in conf
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = compose["services"]["redis"]["command"]
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def test_compose_services_and_commands_match_the_procfile() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name, command in procfile().items():
        assert name in services, f"Procfile process {name} missing from docker-compose.yml"
        composed = shlex.split(services[name]["command"])
        expected = shlex.split(command)
        # Containers bind all interfaces; nothing else may differ.
        assert composed[: len(expected)] == expected, (name, composed)
        assert composed[len(expected) :] in ([], ["--host", "0.0.0.0"]), (name, composed)
    assert {"redis", "prometheus", "grafana"} <= set(services)


def test_compose_prometheus_scrapes_every_process_and_grafana_gets_the_dashboard() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets["cioq-api"] == ["api:8000"]
    assert targets["cioq-worker"] == ["worker:9100"]
    assert targets["cioq-sweeper"] == ["sweeper:9101"]
    assert config["rule_files"]
    worker_env = compose["services"]["worker"]["environment"]
    assert worker_env["CIOQ_WORKER_METRICS_HOST"] == "0.0.0.0"
    sweeper_env = compose["services"]["sweeper"]["environment"]
    assert sweeper_env["CIOQ_SWEEPER_METRICS_HOST"] == "0.0.0.0"
    assert sweeper_env["CIOQ_SWEEPER_METRICS_PORT"] == "9101"
    mounts = " ".join(compose["services"]["grafana"]["volumes"])
    assert "deploy/grafana/dashboards" in mounts and "deploy/grafana/provisioning" in mounts


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    result = subprocess.run(
        [docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_sweeper_liveness_follows_its_heartbeat(
    tmp_path: Path, staging: list[dict[str, Any]]
) -> None:
    heartbeat = tmp_path / "beat"
    assert not liveness.is_alive(30, heartbeat)
    liveness.beat(heartbeat)
    assert liveness.is_alive(30, heartbeat)
    assert not liveness.is_alive(30, heartbeat, now_s=time.time() + 31)
    spec = find(staging, "Deployment", "cioq-sweeper")["spec"]["template"]["spec"]
    probe = spec["containers"][0]
    assert probe["livenessProbe"]["exec"]["command"][:3] == ["python", "-m", "workers.liveness"]


def test_a_running_sweeper_keeps_its_heartbeat_fresh(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "CIOQ_REDIS_URL": "redis://127.0.0.1:1/0"}
    env["CIOQ_SWEEP_INTERVAL_MS"] = "100"
    sweeper = cioq_proc("sweeper", ["sweeper"], env, tmp_path)
    try:
        # Redis is unreachable on purpose: every pass fails, and the loop still turns.
        wait_until(lambda: (tmp_path / "cioq-sweeper-heartbeat").exists(), timeout_s=30)
        check = [sys.executable, "-m", "workers.liveness", "--max-age-s", "5"]
        assert subprocess.run(check, env=env, check=False).returncode == 0
    finally:
        sweeper.stop()
    stale = [sys.executable, "-m", "workers.liveness", "--max-age-s", "0"]
    wait_until(lambda: subprocess.run(stale, env=env, check=False).returncode == 1, timeout_s=10)
