"""Rendering the kustomize overlays with a real kubectl, and validating what comes out."""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = K8S / "schemas"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
#: The oldest and newest Kubernetes releases the manifests are validated against.
KUBERNETES_VERSIONS = ("1.28", "1.31")

#: Custom resources and the JSON schema each is checked against (deploy/k8s/schemas/).
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
}


def kubectl() -> str:
    """The kubectl executable; in CI its absence fails the test instead of skipping it."""
    exe = shutil.which("kubectl")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is not installed (scripts/test installs it)")
        pytest.skip("kubectl is not installed (apt-get install kubectl)")
    return exe


def render(overlay: str, tmp: Path, files: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """`kubectl kustomize` of a copy of deploy/k8s whose secrets.env is the shipped example;
    `files` (path in the tree → text) are written into the copy first, e.g. a test overlay."""
    tree = tmp / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("secrets.env"))
    for example in (tree / "overlays").glob("*/secrets.env.example"):
        shutil.copyfile(example, example.with_name("secrets.env"))
    for path, text in (files or {}).items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text(text)
    result = subprocess.run(
        [kubectl(), "kustomize", str(tree / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@functools.cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / CRD_SCHEMAS[(api_version, kind)]).read_text())
    return strict(schema)


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with unknown fields refused wherever it lists the known ones (kubeconform
    -strict does the same), so a misspelt field fails instead of being ignored."""
    out = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(out)
    # metadata is ObjectMeta, which these generated schemas leave open.
    out["properties"]["metadata"] = {"type": "object"}
    return out


def validate(doc: dict[str, Any]) -> None:
    """Raises when `doc` is not a valid object of its kind (core or one of CRD_SCHEMAS)."""
    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_SCHEMAS:
        jsonschema.Draft202012Validator(crd_schema(*key)).validate(doc)
    else:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name}")


def named(docs: list[dict[str, Any]], kind: str, prefix: str) -> dict[str, Any]:
    """The one `kind` whose generated name (prefix-hash) starts with `prefix`."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(prefix)]
    assert len(found) == 1, [d["metadata"]["name"] for d in found]
    return found[0]


def pod_templates(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (doc["metadata"]["name"], doc["spec"]["template"])
        for doc in docs
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")
    ]


def restricted_violations(name: str, template: dict[str, Any]) -> list[str]:
    """What keeps a pod out of a namespace enforcing the "restricted" Pod Security Standard."""
    spec = template["spec"]
    pod_sc = spec.get("securityContext", {})
    found: list[str] = []
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            found.append(host)
    allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral"}
    allowed_volumes |= {"persistentVolumeClaim", "projected", "secret"}
    for volume in spec.get("volumes", []):
        if not set(volume) - {"name"} <= allowed_volumes:
            found.append(f"volume {volume['name']}")
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c.get("securityContext", {})
        where = f"{name}/{c['name']}"
        if sc.get("privileged"):
            found.append(f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation not false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{where}: capabilities must drop ALL")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            found.append(f"{where}: runAsNonRoot")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            found.append(f"{where}: runAsUser 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where}: seccompProfile")
        if any("hostPort" in p for p in c.get("ports", [])):
            found.append(f"{where}: hostPort")
    return found
