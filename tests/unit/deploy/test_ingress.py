"""The example Ingresses, evaluated against the api's own route table.

The public Ingress (deploy/k8s/examples/ingress.yaml) must route every producer-facing
route of every lane to cioq, and nothing operators use: the admin API, the console,
/metrics, the OpenAPI document, the probes. The route table comes from the app itself,
so a route added to a lane fails here until the Ingress routes it. Path rules are
evaluated as Kubernetes defines them (``Prefix`` matches whole path elements, ``Exact``
the whole path); ingress-nginx picks the longest matching rule, and every rule here
points at the one api Service, so "some rule matches" is "the call reaches cioq".
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from service.api.app import create_app
from service.config import Settings
from service.web.http import Route, Router, split_path
from tests.support.k8s import K8S, validate
from tests.support.triggers import RecordingTriggers

PUBLIC = K8S / "examples" / "ingress.yaml"
INTERNAL = K8S / "examples" / "ingress-internal.yaml"
#: Router routes that are not for producers: the probes and the OpenAPI document.
NOT_FOR_PRODUCERS = {"healthz", "readyz", "openapi"}
#: Paths the api serves outside its router (tests below check they stay internal).
OUTSIDE_THE_ROUTER = ["/metrics", "/console", "/console/sign-in", "/console/overview"]
SERVICE = {"name": "cioq-api", "port": {"name": "http"}}


def _elements(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def backend_for(ingress: dict[str, Any], host: str, path: str) -> dict[str, Any] | None:
    """The backend Service a request for `path` on `host` goes to, or None (a 404)."""
    best: tuple[int, dict[str, Any]] | None = None
    for rule in ingress["spec"]["rules"]:
        if rule.get("host") not in (None, host):
            continue
        for p in rule["http"]["paths"]:
            kind, want = p["pathType"], p["path"]
            if kind == "Exact":
                matched = path == want
            elif kind == "Prefix":
                prefix = _elements(want)
                matched = _elements(path)[: len(prefix)] == prefix
            else:
                pytest.fail(f"{want}: pathType {kind} has no portable meaning; use Prefix or Exact")
            if matched and (best is None or len(want) > best[0]):
                best = (len(want), p["backend"]["service"])
    return best[1] if best else None


def concrete(route: Route) -> str:
    """A path that `route` matches, its parameters filled in."""
    return "/" + "/".join("x1" if s.startswith("{") else s for s in route.pattern)


def lane_of(route: Route) -> str:
    module = str(getattr(route.handler, "__module__", ""))
    return module.split(".")[2] if module.startswith("service.lanes.") else "api"


@pytest.fixture(scope="module")
def routes() -> list[Route]:
    settings = Settings(redis_url="redis://127.0.0.1:1/0")  # never connected: routes only
    app = create_app(settings, triggers=RecordingTriggers())
    return list(app.router.routes)


@pytest.fixture(scope="module")
def public() -> dict[str, Any]:
    (doc,) = yaml.safe_load_all(PUBLIC.read_text())
    return dict(doc)


def host_of(ingress: dict[str, Any]) -> str:
    return str(ingress["spec"]["rules"][0]["host"])


def test_the_examples_validate_and_terminate_tls(public: dict[str, Any]) -> None:
    (internal,) = yaml.safe_load_all(INTERNAL.read_text())
    for ingress in (public, internal):
        validate(ingress)
        assert ingress["spec"]["tls"], ingress["metadata"]["name"]
    assert internal["spec"]["ingressClassName"] != public["spec"]["ingressClassName"]
    body_mb = public["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    # Bigger than cioq's own request cap (5 MB), so cioq answers 413 itself, with a body.
    assert int(body_mb.removesuffix("m")) * 1_000_000 > Settings().listener.max_request_bytes


def test_every_producer_route_of_every_lane_reaches_cioq(
    public: dict[str, Any], routes: list[Route]
) -> None:
    producer = [r for r in routes if r.auth != "admin" and r.name not in NOT_FOR_PRODUCERS]
    assert {lane_of(r) for r in producer} >= {"track", "pipelines", "app"}
    unrouted = []
    for route in producer:
        path = concrete(route)
        found, _, _ = Router(routes).match(route.method, split_path(path.encode()))
        assert found is route, path  # the filled-in path is this route's
        if backend_for(public, host_of(public), path) != SERVICE:
            unrouted.append(f"{route.method} {path} ({lane_of(route)})")
    assert unrouted == [], "route these in deploy/k8s/examples/ingress.yaml"


def test_one_call_of_each_lane_reaches_cioq(public: dict[str, Any]) -> None:
    """The calls the review found 404ing, named, in case the route table ever shrinks."""
    for path in (
        "/api/v1/customers/42",
        "/api/v2/batch",
        "/v1/identify",
        "/v1/batch",
        "/v1/send/email",
        "/v1/campaigns/7/triggers",
        "/v1/customers/42/attributes",
        "/cioq/v1/jobs/abc",
        "/unsubscribe/dGVzdA",
    ):
        assert backend_for(public, host_of(public), path) == SERVICE, path


def test_operator_paths_stay_off_the_public_ingress(
    public: dict[str, Any], routes: list[Route]
) -> None:
    internal = [concrete(r) for r in routes if r.auth == "admin" or r.name in NOT_FOR_PRODUCERS]
    assert any(p.startswith("/admin/") for p in internal)
    for path in internal + OUTSIDE_THE_ROUTER + ["/openapi.json", "/admin"]:
        assert backend_for(public, host_of(public), path) is None, path


def test_the_internal_ingress_serves_the_console_and_admin_only() -> None:
    (internal,) = yaml.safe_load_all(INTERNAL.read_text())
    host = host_of(internal)
    for path in ("/console", "/console/overview", "/admin/v1/workspaces"):
        assert backend_for(internal, host, path) == SERVICE, path
    for path in ("/metrics", "/api/v1/customers/42", "/v1/batch", "/consoles"):
        assert backend_for(internal, host, path) is None, path
    source_ranges = internal["metadata"]["annotations"]
    assert source_ranges["nginx.ingress.kubernetes.io/whitelist-source-range"]
