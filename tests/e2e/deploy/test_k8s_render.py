"""Every kustomize overlay renders with a real kubectl and is a deliverable an SRE approves.

Rendered output is validated (core kinds against Kubernetes 1.30, the Prometheus Operator
and KEDA kinds against the schemas in deploy/k8s/schemas/), checked by checkov, by the
"restricted" Pod Security Standard, and against the monitoring it must feed: the job and
namespace labels the alert rules select on, the KEDA query's namespace, runbook links.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from service.config import PLACEHOLDER, load_settings
from service.errors import ConfigError
from tests.support.k8s import (
    K8S,
    OVERLAYS,
    ROOT,
    find,
    named,
    pod_templates,
    render,
    restricted_violations,
    validate,
)

RULES = ROOT / "deploy" / "prometheus" / "cioq-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "cioq-alerts.test.yml"
RUNBOOK = ROOT / "deploy" / "RUNBOOK.md"
SCRAPE_CONFIGS = ROOT / "deploy" / "prometheus" / "scrape-configs.yml"
#: The runbook base of deploy/prometheus/cioq-alerts.yml (documented in its header).
DEFAULT_RUNBOOK_BASE = "https://github.com/example/cioq/blob/main/deploy/RUNBOOK.md"
CHECKOV = ROOT / ".data" / "checkov" / "bin" / "checkov"
#: Deployments KEDA scales: a `replicas` in their manifest would fight the HPA on every apply.
KEDA_OWNED = {"cioq-worker"}

pytestmark = pytest.mark.xdist_group("k8s-render")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    return {o: render(o, tmp_path_factory.mktemp(o)) for o in OVERLAYS}


def namespace_of(docs: list[dict[str, Any]]) -> str:
    (namespace,) = [d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"]
    return str(namespace)


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_the_overlays_are_staging_and_production() -> None:
    assert {"staging", "production"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    for doc in docs:
        try:
            validate(doc)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {doc['kind']} {doc['metadata']['name']}: {exc.message}")
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{overlay}: {doc['kind']} {doc['metadata']['name']}: {exc.message}")
    kinds = {d["kind"] for d in docs}
    assert {
        "Namespace",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ConfigMap",
        "Secret",
        "ScaledObject",
        "PodMonitor",
        "PrometheusRule",
    } <= kinds
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    assert deployments == {"cioq-api", "cioq-worker", "cioq-sweeper"}
    namespace = namespace_of(docs)
    assert all(
        d["metadata"].get("namespace") == namespace for d in docs if d["kind"] != "Namespace"
    )


@pytest.mark.parametrize(
    ("kind", "mutate"),
    [
        ("PodMonitor", lambda d: d["spec"].update(jobLable="app.kubernetes.io/name")),
        ("PodMonitor", lambda d: d["spec"]["podMetricsEndpoints"][0].update(port=9100)),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].update(fr="2m")),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].update({"for": 120})),
        ("ScaledObject", lambda d: d["spec"].update(maxReplicas=3)),
    ],
)
def test_the_crd_schemas_refuse_broken_objects(
    rendered: dict[str, list[dict[str, Any]]], kind: str, mutate: Any
) -> None:
    doc = copy.deepcopy(next(d for d in rendered["staging"] if d["kind"] == kind))
    validate(doc)
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)


def test_staging_bundles_redis_and_production_does_not(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    assert any(d["kind"] == "StatefulSet" for d in rendered["staging"])
    assert not any(d["kind"] == "StatefulSet" for d in rendered["production"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_meets_the_restricted_pod_security_standard(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    namespace = find(docs, "Namespace", namespace_of(docs))
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for name, template in pod_templates(docs):
        assert restricted_violations(name, template) == [], name
        spec = template["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        for c in spec["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert "memory" in c["resources"]["limits"], (name, c["name"])
            assert "livenessProbe" in c and "readinessProbe" in c, (name, c["name"])
        assert all(
            v["emptyDir"].get("sizeLimit") for v in spec.get("volumes", []) if "emptyDir" in v
        ), name


def test_the_checker_catches_a_root_pod(rendered: dict[str, list[dict[str, Any]]]) -> None:
    template = copy.deepcopy(
        find(rendered["staging"], "Deployment", "cioq-api")["spec"]["template"]
    )
    template["spec"]["securityContext"]["runAsUser"] = 0
    template["spec"]["containers"][0]["securityContext"]["capabilities"] = {}
    assert len(restricted_violations("api", template)) == 2


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_and_workers_spread_and_keda_owns_the_worker_count(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    for name in ("cioq-api", "cioq-worker"):
        spread = find(docs, "Deployment", name)["spec"]["template"]["spec"]
        keys = {c["topologyKey"] for c in spread["topologySpreadConstraints"]}
        assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}, name
    scaled = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "ScaledObject"}
    assert scaled == KEDA_OWNED
    for name in KEDA_OWNED:
        assert "replicas" not in find(docs, "Deployment", name)["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_readiness_is_process_local_and_worker_liveness_follows_the_consumer(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    api = find(docs, "Deployment", "cioq-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["timeoutSeconds"] >= 3
    worker = find(docs, "Deployment", "cioq-worker")["spec"]["template"]["spec"]["containers"][0]
    command = worker["livenessProbe"]["exec"]["command"]
    assert command[:5] == ["python", "-m", "workers.liveness", "--role", "worker"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_and_secret_changes_roll_the_pods(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    """Generated names carry a content hash, and every pod refers to the hashed names."""
    docs = rendered[overlay]
    config = named(docs, "ConfigMap", "cioq-config-")["metadata"]["name"]
    secret = named(docs, "Secret", "cioq-secrets-")["metadata"]["name"]
    for name, template in pod_templates(docs):
        refs = json.dumps(template["spec"])
        assert secret in refs, name
        assert f'"{config}"' in refs or "redis" in name, name
        assert '"cioq-secrets"' not in refs and '"cioq-config"' not in refs, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_namespace_and_prometheus_address_are_overlay_values(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    images = {c["image"] for _, t in pod_templates(docs) for c in t["spec"]["containers"]}
    # Every image names an exact version: no bare name, no "latest".
    assert all(re.search(r":v?\d+\.\d+\.\d+$|@sha256:", image) for image in images), images
    (scaled,) = [d for d in docs if d["kind"] == "ScaledObject"]
    metadata = scaled["spec"]["triggers"][0]["metadata"]
    namespace = namespace_of(docs)
    assert f'namespace="{namespace}"' in metadata["query"]
    assert "NAMESPACE" not in metadata["query"]
    assert set(re.findall(r'namespace="([^"]*)"', metadata["query"])) == {namespace}
    assert metadata["serverAddress"].startswith("http")
    component = yaml.safe_load((K8S / "components" / "keda" / "scaledobject.yaml").read_text())
    assert (
        metadata["serverAddress"] != component["spec"]["triggers"][0]["metadata"]["serverAddress"]
    ), "the overlay must set the Prometheus address"


def secret_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The rendered Secret's values, as the pods get them (from secrets.env.example)."""
    data = named(docs, "Secret", "cioq-secrets-")["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def config_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = named(docs, "ConfigMap", "cioq-config-")["data"]
    return data


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_example_secret_is_refused_by_the_production_check(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**config_env(rendered[overlay]), **secret_env(rendered[overlay])}
    assert env["CIOQ_ENV"] == "production"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    for name in ("CIOQ_SITE_ID", "CIOQ_API_KEY", "CIOQ_INGEST_KEYS", "CIOQ_ADMIN_KEYS"):
        assert name in str(refused.value), name
    assert "CIOQ_REDIS_URL" in str(refused.value)
    # The same settings with real values start: the placeholders are what is refused.
    for name, value in secret_env(rendered[overlay]).items():
        monkeypatch.setenv(name, value.replace(PLACEHOLDER, f"real-{name.lower()}"))
    settings = load_settings()
    assert settings.redis.env == "production" and settings.metrics.worker_metrics_port == 9100


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_redis_url_and_its_password_live_in_the_secret(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    secret = secret_env(rendered[overlay])
    config = config_env(rendered[overlay])
    assert "CIOQ_REDIS_URL" in secret and "CIOQ_REDIS_URL" not in config
    assert urlsplit(secret["CIOQ_REDIS_URL"]).password
    if any(d["kind"] == "StatefulSet" for d in rendered[overlay]):
        # The bundled Redis's password and its URL's must be the same value. On a cluster
        # overlay the bundled Redis is the broker, not the store.
        url = "CIOQ_BROKER_URL" if config.get("CIOQ_REDIS_CLUSTER") == "true" else "CIOQ_REDIS_URL"
        assert unquote(urlsplit(secret[url]).password or "") == secret["REDIS_PASSWORD"]


def test_the_bundled_redis_is_locked_down(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["staging"]
    redis_set = find(docs, "StatefulSet", "cioq-redis")
    spec = redis_set["spec"]["template"]["spec"]
    redis = spec["containers"][0]
    # args, not command: the image's entrypoint stays; the password comes from the Secret.
    assert "command" not in redis
    assert redis["args"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in redis["env"]}
    assert env["REDIS_PASSWORD"] == "REDIS_PASSWORD"
    assert spec["securityContext"]["runAsUser"] >= 10000
    assert {c["name"] for c in spec["containers"]} == {"redis", "redis-exporter"}
    governing = find(docs, "Service", redis_set["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    conf = named(docs, "ConfigMap", "cioq-redis-config-")["data"]["redis.conf"].splitlines()
    assert "maxmemory-policy noeviction" in conf and "appendonly yes" in conf
    (maxmemory,) = [line.split()[1] for line in conf if line.startswith("maxmemory ")]
    limit_mib = int(redis["resources"]["limits"]["memory"].removesuffix("Gi")) * 1024
    # Headroom for the AOF rewrite's fork: maxmemory at most 60% of the container limit.
    assert int(maxmemory.removesuffix("mb")) <= 0.6 * limit_mib
    policy = find(docs, "NetworkPolicy", "cioq-redis")
    sources = policy["spec"]["ingress"][0]["from"]
    names = sources[0]["podSelector"]["matchExpressions"][0]["values"]
    assert set(names) == {"cioq-api", "cioq-worker", "cioq-sweeper"}
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "redis"}]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_guard_the_api_and_workers(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    guarded = {
        d["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for d in docs
        if d["kind"] == "NetworkPolicy" and "matchLabels" in d["spec"]["podSelector"]
    }
    assert {"cioq-api", "cioq-worker", "cioq-sweeper"} <= guarded
    api = find(docs, "NetworkPolicy", "cioq-api")
    assert all(rule.get("from") for rule in api["spec"]["ingress"]), "no open ingress rule"
    # Processes without an ingest port: Prometheus reaches their metrics port, no one else.
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    for name in ("cioq-worker", "cioq-sweeper"):
        ingress = find(docs, "NetworkPolicy", name)["spec"]["ingress"]
        assert ingress == [{"from": [monitoring], "ports": [{"port": "metrics"}]}], name


# Monitoring -----------------------------------------------------------------------------


def test_the_prometheus_rule_and_dashboard_copies_are_current(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    source = yaml.safe_load(RULES.read_text())["groups"]
    for overlay, docs in rendered.items():
        rule = find(docs, "PrometheusRule", "cioq")
        # The overlays differ from the source in the runbook base only.
        assert without_runbook_base(rule["spec"]["groups"]) == without_runbook_base(source), (
            overlay,
            "run scripts/sync-k8s",
        )
    dashboard = find(rendered["staging"], "ConfigMap", "cioq-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard_source = (ROOT / "deploy" / "grafana" / "dashboards" / "cioq.json").read_text()
    assert json.loads(dashboard["data"]["cioq.json"]) == json.loads(dashboard_source), (
        "run scripts/sync-k8s"
    )


def without_runbook_base(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups = copy.deepcopy(groups)
    for group in groups:
        for rule in group["rules"]:
            url = rule["annotations"]["runbook_url"]
            rule["annotations"]["runbook_url"] = "#" + url.partition("#")[2]
    return groups


def selected_jobs(expr: str) -> set[str]:
    return set(re.findall(r'\bjob="([^"]+)"', expr))


def test_alerts_select_jobs_the_shipped_scrape_setups_create(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["staging"]
    # PodMonitors: job = the value of the pod label named by jobLabel.
    pod_labels = {
        t["metadata"]["labels"]["app.kubernetes.io/name"]: t["metadata"]["labels"]
        for _, t in pod_templates(docs)
    }
    operator_jobs: set[str] = set()
    for monitor in (d for d in docs if d["kind"] == "PodMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        labels = pod_labels[selector]
        operator_jobs.add(labels[monitor["spec"]["jobLabel"]])
        ports = {
            p["name"]
            for _, t in pod_templates(docs)
            if t["metadata"]["labels"]["app.kubernetes.io/name"] == selector
            for c in t["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] in ports, (monitor["metadata"]["name"], endpoint["port"])
    # The community chart's scrape configs: job from the same pod label, namespace kept.
    scrape = yaml.safe_load(SCRAPE_CONFIGS.read_text())
    # The community chart runs `tpl` over this value: it must be a string holding the list.
    assert isinstance(scrape["extraScrapeConfigs"], str)
    community_jobs: set[str] = set()
    for job in yaml.safe_load(scrape["extraScrapeConfigs"]):
        relabels = job["relabel_configs"]
        keep = [r for r in relabels if r.get("action") == "keep"]
        assert keep and keep[0]["source_labels"] == [
            "__meta_kubernetes_pod_label_app_kubernetes_io_name"
        ]
        community_jobs |= set(keep[0]["regex"].split("|"))
        targets = {r.get("target_label") for r in relabels}
        assert {"job", "namespace", "pod"} <= targets, job["job_name"]
    compose = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    compose_jobs = {job["job_name"] for job in compose["scrape_configs"]}
    cioq_jobs = set().union(*(selected_jobs(r["expr"]) for r in rules()))
    assert cioq_jobs == {"cioq-api", "cioq-worker", "cioq-redis", "cioq-sweeper"}
    assert cioq_jobs <= operator_jobs
    assert cioq_jobs <= community_jobs
    assert {"cioq-api", "cioq-worker", "cioq-sweeper"} <= compose_jobs


def runbook_anchors() -> set[str]:
    """The anchors GitHub/GitLab give deploy/RUNBOOK.md's headings."""
    return {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("#")
    }


def assert_runbook_links(groups: list[dict[str, Any]], base: str) -> None:
    """Every runbook_url is `base` + an anchor of deploy/RUNBOOK.md; `base` is absolute."""
    parts = urlsplit(base)
    assert parts.scheme == "https" and parts.netloc, base
    assert parts.path.endswith("/deploy/RUNBOOK.md"), base
    anchors = runbook_anchors()
    for group in groups:
        for rule in group["rules"]:
            url_base, _, anchor = rule["annotations"]["runbook_url"].partition("#")
            assert url_base == base, rule["alert"]
            assert anchor in anchors, (rule["alert"], anchor)


def test_every_alert_keeps_namespace_and_links_its_runbook() -> None:
    for rule in rules():
        name = rule["alert"]
        for clause in re.findall(r"\bby \(([^)]*)\)", rule["expr"]):
            assert "namespace" in clause, (name, clause)
        assert "by (" in rule["expr"], name
    assert_runbook_links(yaml.safe_load(RULES.read_text())["groups"], DEFAULT_RUNBOOK_BASE)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_links_its_own_runbook_base(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    rule = find(rendered[overlay], "PrometheusRule", "cioq")
    base = rule["metadata"]["annotations"]["cioq.io/runbook-base-url"]
    assert_runbook_links(rule["spec"]["groups"], base)


def test_the_runbook_link_check_catches_a_missing_anchor() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    groups[0]["rules"][0]["annotations"]["runbook_url"] = DEFAULT_RUNBOOK_BASE + "#cioqnosuch"
    with pytest.raises(AssertionError):
        assert_runbook_links(groups, DEFAULT_RUNBOOK_BASE)


def test_every_alert_has_a_promtool_case() -> None:
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {rule["alert"] for rule in rules()} <= tested


def test_promtool_passes_the_rule_tests() -> None:
    promtool = __import__("shutil").which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (scripts/test installs prometheus)")
        pytest.skip("promtool is not installed")
    result = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# checkov -------------------------------------------------------------------------------


def skip_annotations(docs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(resource, check id, reason) of every checkov skip annotation."""
    found: list[tuple[str, str, str]] = []
    for doc in docs:
        for key, value in (doc["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, reason = value.partition("=")
                found.append((doc["metadata"]["name"], check, reason.strip()))
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_finds_nothing_unexplained(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, tmp_path: Path
) -> None:
    if not CHECKOV.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHECKOV} is missing (scripts/test installs checkov)")
        pytest.skip("checkov is not installed (scripts/test installs it into .data/checkov)")
    docs = rendered[overlay]
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    result = subprocess.run(
        [
            *(str(CHECKOV), "--file", str(manifest), "--framework", "kubernetes"),
            *("--output", "json", "--skip-download", "--quiet", "--compact"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = [
        f"{f['check_id']} {f['resource']}: {f['check_name']}"
        for f in report["results"]["failed_checks"]
    ]
    assert failed == [], "fix these or skip them in the manifest with a one-line reason"
    skips = skip_annotations(docs)
    assert all(re.fullmatch(r"CKV_K8S_\d+", check) and reason for _, check, reason in skips)
    # checkov honoured each annotation (a misspelt id would leave its check failing above).
    assert report["summary"]["skipped"] == len(skips)
    assert report["summary"]["passed"] > 100


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_values_are_the_overlays(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    """The trusted proxy range is a value of each cluster's network: set by every overlay."""
    base = (K8S / "base" / "config.env").read_text()
    assert not re.search(r"^CIOQ_TRUSTED_PROXIES=", base, re.M)
    assert config_env(rendered[overlay])["CIOQ_TRUSTED_PROXIES"]


def test_the_cluster_overlays_broker_is_small_and_keeps_nothing(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """Drain triggers are loss-tolerant: the broker needs no AOF, volume or store-sized memory."""
    docs = rendered["cluster"]
    broker = find(docs, "StatefulSet", "cioq-redis")["spec"]
    assert "volumeClaimTemplates" not in broker
    volumes = {v["name"]: v for v in broker["template"]["spec"]["volumes"]}
    assert volumes["data"]["emptyDir"]["sizeLimit"]
    redis = broker["template"]["spec"]["containers"][0]
    limit_mib = int(redis["resources"]["limits"]["memory"].removesuffix("Mi"))
    assert limit_mib <= 512
    conf = named(docs, "ConfigMap", "cioq-redis-config-")["data"]["redis.conf"].splitlines()
    assert "appendonly no" in conf and "maxmemory-policy noeviction" in conf
    (maxmemory,) = [line.split()[1] for line in conf if line.startswith("maxmemory ")]
    assert int(maxmemory.removesuffix("mb")) <= 0.6 * limit_mib
