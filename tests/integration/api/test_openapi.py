"""GET /openapi.json: a valid OpenAPI 3.1 document naming every route the app serves.

schemathesis then generates requests from that document against the running app on real
Redis: no answer may be a 5xx, and none may contradict the document.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.api.app import create_app
from service.api.openapi import OPERATIONS, path_of
from service.config import Settings
from tests.support.http_server import serve_in_thread
from tests.support.triggers import RecordingTriggers

INGEST_KEY, ADMIN_KEY = "openapi-ingest-key", "openapi-admin-key"


@pytest.fixture
def served(make_settings: Callable[..., Settings]) -> Iterator[tuple[str, Any]]:
    settings = make_settings(ingest_keys=INGEST_KEY, admin_keys=ADMIN_KEY)
    app = create_app(settings, triggers=RecordingTriggers())
    with serve_in_thread(app) as url:
        yield url, app


def test_document_is_valid_and_names_every_route(served: tuple[str, Any]) -> None:
    """Every (method, path) of the router is documented, and nothing else is."""
    url, app = served
    r = httpx.get(f"{url}/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    routed = {(route.method, path_of(route)) for route in app.router.routes}
    assert documented == routed | {("GET", "/metrics")}
    assert len(routed) >= 25


def test_every_route_has_its_own_entry(served: tuple[str, Any]) -> None:
    """Every route is described by name, not by the generic fallback."""
    _, app = served
    missing = [r.name for r in app.router.routes if r.name not in OPERATIONS]
    assert missing == []
    stale = set(OPERATIONS) - {r.name for r in app.router.routes}
    assert stale == set()


def test_documented_error_body_matches_a_real_error(served: tuple[str, Any]) -> None:
    """The 400 an ingest route really answers has the documented error fields."""
    url, _ = served
    r = httpx.post(f"{url}/api/v2/batch", json={"batch": "not a list"}, auth=("site", INGEST_KEY))
    assert r.status_code == 400
    error = r.json()["errors"][0]
    assert {"field", "rule", "message"} <= error.keys()
    assert r.json()["meta"]["error"] == error["message"]


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def test_api_conforms_to_its_document(served: tuple[str, Any]) -> None:
    """Generated requests, valid and invalid: never a 5xx, nothing the document does not allow.

    Bounded by max_examples so the whole run stays well under a minute.
    """
    url, _ = served
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    schema.config.update(base_url=url)
    cases = st.one_of(
        schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE)
    )

    @given(cases)
    @settings(max_examples=800, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        key = ADMIN_KEY if case.path.startswith("/admin/") else INGEST_KEY
        case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)

    check()
