"""A real Prometheus scrapes a running api and worker; every dashboard and alert query runs.

The stack (redis-server, sandbox, api, sweeper, a prefork worker) gets traffic that
produces deliveries, retries (injected 500s), a setup pause (an injected 401),
bisection and dead letters (poisoned ops), then each PromQL expression of the Grafana
dashboard, the alert rules and the KEDA trigger is evaluated through Prometheus's
HTTP API: each must be valid, and each of the dashboard's must return data.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from tests.support.paths import ROOT
from tests.support.processes import Proc, free_port, wait_http, wait_until
from tests.support.stack import INGEST_KEY, SITE_ID, Stack

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "cioq.json"
RULES = ROOT / "deploy" / "prometheus" / "cioq-alerts.yml"
SCALED_OBJECT = ROOT / "deploy" / "k8s" / "components" / "keda" / "scaledobject.yaml"
#: The namespace label this test's scrape jobs add, as the PodMonitors do in Kubernetes.
NAMESPACE = "cioq-e2e"

#: Values Grafana would put in for the dashboard's variables.
GRAFANA_VARIABLES = {
    "$__rate_interval": "30s",
    "$workspace": ".*",
    "$namespace": NAMESPACE,
    "$job": "cioq-.+",
}

pytestmark = [pytest.mark.xdist_group("prometheus")]


def prometheus_binary() -> str:
    """The prometheus executable; in CI its absence fails the test instead of skipping it."""
    exe = shutil.which("prometheus")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed (scripts/test installs the Debian package)")
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    return exe


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) for every target of every panel."""
    doc = orjson.loads(DASHBOARD.read_bytes())
    return [
        (panel["title"], target["expr"])
        for panel in doc["panels"]
        for target in panel.get("targets", [])
    ]


def grafana_expand(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown dashboard variable in {expr}"
    return expr


def rule_queries() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text())
    return [
        (rule.get("alert") or rule["record"], rule["expr"])
        for group in doc["groups"]
        for rule in group["rules"]
    ]


def keda_queries() -> list[tuple[str, str]]:
    doc = yaml.safe_load(SCALED_OBJECT.read_text())
    return [
        # The overlays put their namespace where the component says NAMESPACE.
        (
            f"keda trigger {t.get('name', t['type'])}",
            t["metadata"]["query"].replace("NAMESPACE", NAMESPACE),
        )
        for t in doc["spec"]["triggers"]
        if t["type"] == "prometheus"
    ]


class Prometheus:
    """A prometheus server of the test's own, scraping every second."""

    def __init__(self, tmp: Path, targets: dict[str, str]) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [{"targets": [target], "labels": {"namespace": NAMESPACE}}],
                }
                for job, target in targets.items()
            ],
        }
        tmp.mkdir(parents=True, exist_ok=True)
        config_path = tmp / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.proc = Proc(
            "prometheus",
            [
                prometheus_binary(),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            dict(os.environ),
            tmp,
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        wait_http(f"http://127.0.0.1:{self.port}/-/ready", timeout_s=60)

    def query(self, expr: str) -> dict[str, Any]:
        """The API's answer to an instant query; invalid PromQL answers status "error"."""
        answer: dict[str, Any] = self.http.get("/api/v1/query", params={"query": expr}).json()
        return answer

    def targets_up(self) -> bool:
        active = self.http.get("/api/v1/targets").json()["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    def close(self) -> None:
        self.http.close()
        self.proc.stop()


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    s = make_stack(
        worker_metrics_port=free_port(),
        retry_base_ms=50,
        retry_cap_ms=200,
        setup_pause_ms=1500,
        throttle_pause_ms=500,
        linger_ms=100,
        coalesce=True,
        late_poll_interval_s=1,
    )
    s.start_api()
    s.start_sweeper()
    s.start_worker(concurrency=2)
    return s


def push_traffic(stack: Stack) -> None:
    """Deliveries, a coalescible pair, retries, a setup pause, bisection and dead letters."""
    with stack.sandbox_client() as sandbox:
        sandbox.post("/_sandbox/faults", json={"status_sequence": [500, 500, 401]})
    auth = (SITE_ID, INGEST_KEY)
    with httpx.Client(base_url=stack.api_url, auth=auth, timeout=30) as api:
        for person in range(20):
            r = api.post(f"/api/v1/customers/p{person}/events", json={"name": "signed_up"})
            assert r.status_code == 200, r.text
        # Events of one person share a batch; the poisoned one makes the batch a 400.
        batch = [
            {
                "type": "person",
                "action": "event",
                "identifiers": {"id": "bisected"},
                "name": "poisoned" if n == 2 else "fine",
                "attributes": {"sandbox_poison": "400"} if n == 2 else {"n": n},
            }
            for n in range(4)
        ]
        assert api.post("/api/v2/batch", json={"batch": batch}).status_code == 200
        r = api.put("/api/v1/customers/partial", json={"sandbox_poison": "207"})
        assert r.status_code == 200, r.text
        # The pair goes once the rest is through (packed across shards into the request
        # that is bisected, it would be resolved by the halves, which are not coalesced),
        # in one request, so a loaded machine cannot let a linger run out between the two.
        wait_until(lambda: stack.received_at_least(23), timeout_s=60, what="23 ops delivered")
        pair = [
            {
                "type": "person",
                "action": "identify",
                "identifiers": {"id": "twice"},
                "attributes": {"plan": plan},
            }
            for plan in ("free", "pro")
        ]
        assert api.post("/api/v2/batch", json={"batch": pair}).status_code == 200
        # One identify Customer.io accepts and fails afterwards: a late failure.
        with stack.sandbox_client() as sandbox:
            late = {"rate": 1.0, "min_delay_s": 0.0, "max_delay_s": 0.0}
            sandbox.post("/_sandbox/late_failures", json=late).raise_for_status()
            r = api.put("/api/v1/customers/late", json={"email": "taken@example.com"})
            assert r.status_code == 200, r.text
            wait_until(
                lambda: any(r["op"].get("identifiers") == {"id": "late"} for r in stack.received()),
                timeout_s=60,
                what="the late identify delivered",
            )
            sandbox.post("/_sandbox/late_failures", json={"rate": 0.0}).raise_for_status()
    push_app_traffic(stack)


def push_app_traffic(stack: Stack) -> None:
    """App API sends: one ambiguous (reset before the sandbox records it, so the lookup
    finds nothing), one clean, and two triggers of one broadcast (the second waits)."""
    email = {"transactional_message_id": 1, "to": "a@example.com", "identifiers": {"id": "m"}}
    headers = {"Authorization": f"Bearer {INGEST_KEY}"}
    with (
        stack.sandbox_client() as sandbox,
        httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as api,
    ):
        sandbox.post("/_sandbox/app_faults", json={"reset_before_rate": 1.0}).raise_for_status()
        lost = api.post("/v1/send/email", json=email).json()
        wait_until(
            lambda: api.get(lost["status_url"]).json()["state"] == "ambiguous",
            timeout_s=60,
            what="the ambiguous send settled",
        )
        sandbox.post("/_sandbox/app_faults", json={}).raise_for_status()
        assert api.post("/v1/send/email", json=email).status_code in (200, 202)
        for n in range(2):
            r = api.post("/v1/campaigns/5/triggers", json={"data": {"n": n}})
            assert r.status_code in (200, 202), r.text


def test_every_dashboard_and_alert_query_runs_against_real_prometheus(
    stack: Stack, tmp_path: Path
) -> None:
    worker_port = stack.env["CIOQ_WORKER_METRICS_PORT"]
    prom = Prometheus(
        tmp_path / "prometheus",
        {
            "cioq-api": f"127.0.0.1:{stack.api_port}",
            "cioq-worker": f"127.0.0.1:{worker_port}",
        },
    )
    try:
        wait_until(prom.targets_up, timeout_s=60, interval_s=0.5, what="both targets up")
        push_traffic(stack)
        pending = {grafana_expand(expr): title for title, expr in dashboard_queries()}
        assert len(pending) >= 20
        # Panels fed by redis_exporter or kube-state-metrics, which this stack does not run:
        # they must parse and run, and cannot return data here.
        elsewhere = {e for e in pending if re.search(r"\b(redis|kube)_\w+\{", e)}
        assert 0 < len(elsewhere) < len(pending) / 2

        def all_return_data() -> bool:
            for expr in list(pending):
                answer = prom.query(expr)
                assert answer["status"] == "success", (pending[expr], expr, answer)
                if answer["data"]["result"] or expr in elsewhere:
                    del pending[expr]
            return not pending

        try:
            wait_until(all_return_data, timeout_s=180, interval_s=1, what="dashboard data")
        except TimeoutError:
            pytest.fail(f"dashboard queries without data: {pending}")

        for name, expr in rule_queries() + keda_queries():
            answer = prom.query(expr)
            assert answer["status"] == "success", (name, expr, answer)
        for name, expr in keda_queries():
            # Without its fallback the query must find the backlog by the labels it selects.
            selected = prom.query(expr.removesuffix("or vector(0)"))["data"]["result"]
            assert selected, (name, expr)

        def rules_evaluated() -> list[dict[str, Any]]:
            groups = prom.http.get("/api/v1/rules").json()["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return rules if all(r.get("lastEvaluation", "").startswith("2") for r in rules) else []

        rules = wait_until(rules_evaluated, timeout_s=30, interval_s=0.5, what="rule evaluation")
        assert {r["name"] for r in rules} == {name for name, _ in rule_queries()}
        assert all(r["health"] == "ok" for r in rules), rules

        dead = prom.query('sum by (reason) (cioq_dead_letters_total{workspace="default"})')
        reasons = {row["metric"]["reason"] for row in dead["data"]["result"]}
        assert reasons == {"invalid", "ambiguous"}
        bisect = prom.query("sum(cioq_bisect_requests_total)")["data"]["result"]
        assert float(bisect[0]["value"][1]) >= 2
        retries = prom.query("sum(cioq_retries_scheduled_total)")["data"]["result"]
        assert float(retries[0]["value"][1]) >= 2
    except BaseException:
        print(prom.proc.log()[-3000:])
        raise
    finally:
        prom.close()


def test_dashboard_has_the_panels_operators_need() -> None:
    doc = orjson.loads(DASHBOARD.read_bytes())
    exprs = " ".join(expr for _, expr in dashboard_queries())
    for metric in (
        "cioq_jobs_accepted_total",
        "cioq_delivered_ops_total",
        "cioq_backlog_entries",
        "cioq_backlog_oldest_age_seconds",
        "cioq_backlog_seconds",
        "cioq_batch_bytes_bucket",
        "cioq_upstream_requests_total",
        "cioq_upstream_request_duration_seconds_bucket",
        "cioq_retries_scheduled_total",
        "cioq_dead_letters_total",
        "cioq_dead_letter_entries",
        "cioq_workspace_paused",
        "cioq_delivery_latency_seconds_bucket",
        "cioq_queue_state_up",
        'up{job=~"$job"',
        'status=~"5.."',
    ):
        assert metric in exprs, metric
    assert doc["uid"] and doc["title"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in doc["templating"]["list"]}
    used = {v for v in re.findall(r"\$\{?(\w+)", DASHBOARD.read_text()) if not v.startswith("__")}
    assert used <= variables, used - variables
    assert {"namespace", "job"} <= variables
    # Every query is scoped to the namespace: staging and production may share a Prometheus.
    unscoped = [
        title for title, expr in dashboard_queries() if 'namespace=~"$namespace"' not in expr
    ]
    assert not unscoped, unscoped
