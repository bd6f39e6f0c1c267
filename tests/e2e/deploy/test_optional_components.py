"""The optional components: default-deny with egress rules, and the api autoscaler.

network-egress: what each cioq pod may still reach.

An overlay of an overlay (as a user adds it) includes components/network-egress and sets
the managed Redis's range, the one value that is the user's network. The rendered
policies are evaluated for each pod (label selectors, policy types, ports): api and
workers reach DNS, Redis and HTTPS; the sweeper DNS and Redis only; everything else is
denied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.k8s import find, pod_templates, render, restricted_violations, validate

REDIS_RANGE = "10.20.30.0/24"


def overlay_with_egress(base: str) -> str:
    return f"""apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../{base}
components:
  - ../../components/network-egress
patches:
  - target:
      kind: NetworkPolicy
      name: cioq-egress-redis
    patch: |-
      - op: replace
        path: /spec/egress/1/to/0/ipBlock/cidr
        value: {REDIS_RANGE}
"""


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def egress_of(docs: list[dict[str, Any]], labels: dict[str, str]) -> set[tuple[int, str]]:
    """(port, destination) pairs the pod may reach; empty when it is egress-isolated."""
    allowed: set[tuple[int, str]] = set()
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
        spec = policy["spec"]
        if "Egress" not in spec.get("policyTypes", []) or not selects(spec["podSelector"], labels):
            continue
        for rule in spec.get("egress", []):
            for peer in rule["to"]:
                if "ipBlock" in peer:
                    where = peer["ipBlock"]["cidr"]
                else:
                    where = str(peer.get("podSelector", {}).get("matchLabels", {}))
                for port in rule["ports"]:
                    allowed.add((int(port["port"]), where))
    return allowed


@pytest.fixture(scope="module", params=["production", "staging"])
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = request.param
    files = {"overlays/egress-test/kustomization.yaml": overlay_with_egress(base)}
    tmp: Path = tmp_path_factory.mktemp(f"egress-{base}")
    return base, render("egress-test", tmp, files)


def test_the_component_validates_and_denies_by_default(rendered: Any) -> None:
    _, docs = rendered
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    for policy in policies.values():
        validate(policy)
    deny = policies["cioq-default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "egress" not in deny and "ingress" not in deny


def test_each_pod_reaches_only_what_it_needs(rendered: Any) -> None:
    base, docs = rendered
    for name, template in pod_templates(docs):
        labels = template["metadata"]["labels"]
        allowed = egress_of(docs, labels)
        ports = {port for port, _ in allowed}
        role = labels["app.kubernetes.io/name"]
        expected = {
            "cioq-api": {53, 6379, 443},
            "cioq-worker": {53, 6379, 443},
            "cioq-sweeper": {53, 6379},
            "cioq-redis": {53},
        }[role]
        assert ports == expected, (base, name, sorted(allowed))
        if role != "cioq-redis":
            # The overlay's Redis range, and the bundled Redis by label.
            assert (6379, REDIS_RANGE) in allowed, (base, name)
            assert (6379, str({"app.kubernetes.io/name": "cioq-redis"})) in allowed
        if 443 in ports:
            https = [where for port, where in allowed if port == 443]
            assert https == ["0.0.0.0/0"], https


def test_a_pod_without_the_component_is_not_isolated(tmp_path: Path) -> None:
    """Without the component the shipped policies are ingress-only (egress unrestricted)."""
    docs = render("production", tmp_path)
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert policies
    assert all(p["spec"]["policyTypes"] == ["Ingress"] for p in policies)


def test_the_api_autoscaler_component_owns_the_api_count(tmp_path: Path) -> None:
    overlay = """apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../staging
components:
  - ../../components/api-autoscaler
"""
    docs = render("hpa-test", tmp_path, {"overlays/hpa-test/kustomization.yaml": overlay})
    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    validate(hpa)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "cioq-api"
    assert hpa["spec"]["minReplicas"] >= 2
    api = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "cioq-api")
    assert "replicas" not in api["spec"]


def test_the_store_exporter_feeds_the_memory_alert_in_production(tmp_path: Path) -> None:
    """With the component, production has a pod the cioq-redis PodMonitor scrapes."""
    overlay = """apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../production
components:
  - ../../components/store-exporter
"""
    files = {"overlays/exporter-test/kustomization.yaml": overlay}
    docs = render("exporter-test", tmp_path, files)
    exporter = find(docs, "Deployment", "cioq-store-exporter")
    for doc in (exporter, find(docs, "NetworkPolicy", "cioq-store-exporter")):
        validate(doc)
    template = exporter["spec"]["template"]
    assert restricted_violations("cioq-store-exporter", template) == []
    monitor = find(docs, "PodMonitor", "cioq-redis")
    labels = template["metadata"]["labels"]
    assert selects(monitor["spec"]["selector"], labels)
    assert labels[monitor["spec"]["jobLabel"]] == "cioq-redis"  # the alert's job
    (container,) = template["spec"]["containers"]
    assert {p["name"] for p in container["ports"]} == {
        e["port"] for e in monitor["spec"]["podMetricsEndpoints"]
    }
    env = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]}
    assert env == {"REDIS_ADDR": "CIOQ_REDIS_URL"}  # the store, not a bundled Redis
