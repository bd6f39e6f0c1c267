"""Settings: bad combinations stop the process at start-up with a message naming them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from service.config import Settings, load_settings
from service.errors import ConfigError


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_batch_bytes": 20_000, "max_op_bytes": 19_999}, "max_batch_bytes"),
        ({"tls_cert": "/tmp/cert.pem"}, "CIOQ_TLS_CERT and CIOQ_TLS_KEY"),
        ({"upstream_timeout_s": 25, "shutdown_grace_s": 25}, "CIOQ_SHUTDOWN_GRACE_S"),
        ({"shards": 0}, "shards"),
        ({"cdp_max_batch_bytes": 20_000, "cdp_max_call_bytes": 19_999}, "cdp_max_batch_bytes"),
    ],
)
def test_bad_combinations_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(**overrides)
    assert message in str(info.value)


def test_defaults_are_consistent() -> None:
    settings = Settings()
    assert settings.drain.upstream_timeout_s < settings.drain.shutdown_grace_s
    assert settings.limits.max_op_bytes + 12 <= settings.limits.max_batch_bytes


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CIOQ_TRACK_URL": "ftp://example.com"}, "track_url"),
        ({"CIOQ_WORKSPACES": '[{"name": "Bad Name", "site_id": "s", "api_key": "k"}]'}, "name"),
        ({"CIOQ_UPSTREAM_TIMEOUT_S": "30"}, "CIOQ_SHUTDOWN_GRACE_S"),
        ({"CIOQ_CDP_URL": "cdp.customer.io"}, "cdp_url"),
        (
            {"CIOQ_ENV": "production", "CIOQ_CDP_API_KEY": "dev-cdp-key"},
            "Pipelines key is the development key",
        ),
    ],
)
def test_load_settings_names_the_problem(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("env", "lanes", "cdp_url"),
    [
        ({}, ("track",), "https://cdp.customer.io"),
        ({"CIOQ_CDP_API_KEY": "k"}, ("track", "pipelines"), "https://cdp.customer.io"),
        (
            {"CIOQ_CDP_API_KEY": "k", "CIOQ_REGION": "eu"},
            ("track", "pipelines"),
            "https://cdp-eu.customer.io",
        ),
        (
            {"CIOQ_CDP_API_KEY": "k", "CIOQ_CDP_URL": "http://sb:1/"},
            ("track", "pipelines"),
            "http://sb:1",
        ),
    ],
)
def test_pipelines_lane_per_workspace(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], lanes: tuple[str, ...], cdp_url: str
) -> None:
    """A workspace has the Pipelines lane only with a write key; host by region or override."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ws = load_settings().workspace("default")
    assert tuple(ws.lanes) == lanes
    assert ws.cdp_base_url == cdp_url
    assert "wk-9" not in repr(ws)  # the write key is a secret
