"""Security: keys on every route, distinct admin keys, production refusals, no secret leaks."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from service.api.app import create_app
from service.config import Settings, check_keys, load_settings
from service.errors import ConfigError
from service.web.http import Route
from tests.support.http_server import serve_in_thread
from tests.support.triggers import RecordingTriggers

API_KEY = "sec-api-key-7Qx2vN"
INGEST_KEY = "sec-ingest-key-Lm4pR8"
ADMIN_KEY = "sec-admin-key-Zt9wK3"
SECRETS = (API_KEY, INGEST_KEY, ADMIN_KEY)

PRODUCTION = {
    "CIOQ_ENV": "production",
    "CIOQ_SITE_ID": "site-prod",
    "CIOQ_API_KEY": API_KEY,
    "CIOQ_INGEST_KEYS": INGEST_KEY,
    "CIOQ_ADMIN_KEYS": ADMIN_KEY,
}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({}, None),
        ({"CIOQ_API_KEY": "dev-api-key"}, "API key is empty or the development key"),
        ({"CIOQ_INGEST_KEYS": "dev-ingest-key"}, "ingest keys are empty"),
        ({"CIOQ_INGEST_KEYS": " , "}, "ingest keys are empty"),
        ({"CIOQ_ADMIN_KEYS": "dev-admin-key"}, "CIOQ_ADMIN_KEYS is empty"),
        ({"CIOQ_ADMIN_KEYS": ","}, "CIOQ_ADMIN_KEYS is empty"),
        ({"CIOQ_SITE_ID": "dev-site"}, "site id"),
        ({"CIOQ_ADMIN_KEYS": INGEST_KEY}, "must not share a key"),
        (
            {"CIOQ_WORKSPACES": '[{"name": "eu", "site_id": "s2", "api_key": "k2"}]'},
            "workspace 'eu': ingest keys are empty",
        ),
        ({"CIOQ_ENV": "development", "CIOQ_API_KEY": "dev-api-key"}, None),
        ({"CIOQ_ENV": "development", "CIOQ_ADMIN_KEYS": INGEST_KEY}, "must not share a key"),
    ],
)
def test_start_up_key_rules(
    monkeypatch: pytest.MonkeyPatch, change: dict[str, str], problem: str | None
) -> None:
    """Production refuses dev or empty keys; admin keys never double as ingest keys."""
    for name, value in {**PRODUCTION, **change}.items():
        monkeypatch.setenv(name, value)
    if problem is None:
        assert load_settings().redis.env in ("production", "development")
        return
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_settings()


def test_default_settings_are_refused_in_production() -> None:
    """Every default secret is named in the refusal, so one start-up shows all fixes."""
    with pytest.raises(ConfigError) as caught:
        check_keys(Settings(env="production"))
    message = str(caught.value)
    for part in ("CIOQ_ADMIN_KEYS", "ingest keys", "API key", "site id"):
        assert part in message


def test_repr_and_errors_hide_secrets() -> None:
    """repr of Settings and Workspace, and config errors, never show a key."""
    workspaces = (
        f'[{{"name": "w2", "site_id": "s2", "api_key": "{API_KEY}x", "ingest_keys": "i2"}}]'
    )
    s = Settings(
        api_key=SecretStr(API_KEY),
        ingest_keys=INGEST_KEY,
        admin_keys=ADMIN_KEY,
        workspaces_json=workspaces,
        redis_url="redis://:redis-pass-Qw3@127.0.0.1:6379/0",
    )
    shown = " ".join([repr(s), str(s), repr(s.workspaces), str(s.workspaces)])
    for secret in (*SECRETS, "redis-pass-Qw3"):
        assert secret not in shown
    with pytest.raises(ConfigError) as caught:
        check_keys(
            s.model_copy(
                update={
                    "redis": s.redis.model_copy(update={"env": "production"}),
                    "keys": s.keys.model_copy(update={"admin_keys": ()}),
                }
            )
        )
    assert not any(secret in str(caught.value) for secret in SECRETS)


# --- fuzzing every route of the app's router ---------------------------------------------

AUTHS: dict[str, str | None] = {
    "none": None,
    "ingest-basic": "Basic " + base64.b64encode(f"any:{INGEST_KEY}".encode()).decode(),
    "ingest-bearer": f"Bearer {INGEST_KEY}",
    "admin": f"Bearer {ADMIN_KEY}",
    "wrong": "Bearer not-a-key",
    "api-key": f"Bearer {API_KEY}",  # the Customer.io key is not an ingest key
    "prefix": f"Bearer {INGEST_KEY[:-1]}",
    "garbage-basic": "Basic !!!notbase64",
    "empty-basic": "Basic " + base64.b64encode(b"any:").decode(),
    "scheme-only": "Bearer",
}

#: Which credentials open a route of each kind.
OPENS: dict[str, set[str]] = {
    "ingest": {"ingest-basic", "ingest-bearer"},
    "admin": {"admin"},
    "public": set(AUTHS),
}

_segment = st.one_of(
    st.sampled_from(["default", "42", "a%2Fb", "%00", "%2e%2e", "x" * 300]),
    st.text(alphabet=st.characters(codec="ascii", categories=["L", "N"]), min_size=1),
)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_body = st.one_of(
    _json.map(lambda v: httpx.Request("POST", "/", json=v).content),
    st.binary(max_size=200),
    st.just(b""),
)


@pytest.fixture
def fuzz_target(make_settings: Callable[..., Settings]) -> Iterator[tuple[str, list[Route]]]:
    """The api over real HTTP; one server serves every example of a test."""
    app = create_app(
        make_settings(
            api_key=API_KEY,
            ingest_keys=(INGEST_KEY,),
            admin_keys=(ADMIN_KEY,),
            track_url="http://127.0.0.1:9",
        ),
        triggers=RecordingTriggers(),
    )
    with serve_in_thread(app) as base:
        yield base, list(app.router.routes)


def _path(route: Route, params: list[str]) -> str:
    values = iter(params)
    return "/" + "/".join(next(values) if p.startswith("{") else p for p in route.pattern)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_every_route(data: st.DataObject, fuzz_target: tuple[str, list[Route]]) -> None:
    """Any route, credentials, params and body: no 5xx, no success without the right key,
    and no configured secret in any response."""
    base, routes = fuzz_target
    route = data.draw(st.sampled_from(routes), label="route")
    params = [data.draw(_segment) for p in route.pattern if p.startswith("{")]
    auth_name = data.draw(st.sampled_from(sorted(AUTHS)), label="auth")
    body = data.draw(_body, label="body") if route.method in ("POST", "PUT") else b""
    query = data.draw(st.sampled_from(["", "limit=5", "limit=-1", "reason=x&after=0-0"]))
    headers = {"content-type": "application/json"}
    if AUTHS[auth_name] is not None:
        headers["authorization"] = str(AUTHS[auth_name])
    url = f"{base}{_path(route, params)}" + (f"?{query}" if query else "")
    r = httpx.request(route.method, url, content=body, headers=headers, timeout=30)
    assert r.status_code < 500, (route.name, r.status_code, r.text)
    if auth_name not in OPENS[route.auth]:
        assert r.status_code == 401, (route.name, auth_name, r.status_code)
    shown = r.text + " ".join(f"{k}: {v}" for k, v in r.headers.items())
    for secret in SECRETS:
        assert secret not in shown


def test_every_non_public_route_is_guarded(fuzz_target: tuple[str, list[Route]]) -> None:
    """Only probes, the API description and metrics are public; the rest needs a key."""
    _, routes = fuzz_target
    public = {r.name for r in routes if r.auth == "public"}
    assert {"healthz", "readyz"} <= public <= {"healthz", "readyz", "openapi", "metrics"}
    assert {r.auth for r in routes} <= {"public", "ingest", "admin"}
    assert any(r.auth == "admin" for r in routes)


# --- a full real-process run at DEBUG: no key in any log or metrics output ----------------
