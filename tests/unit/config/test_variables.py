"""Grouping the settings changed no variable: each ``CIOQ_*`` still sets the setting of the
same name, with the same default, as when `Settings` was one flat class.

`settings_before.json` was written from that flat class (the variables and defaults that
docs/configuration.md listed then): variable -> field name, other names, default."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
from pydantic import SecretStr

from docs.gen_configuration import settings_env_names
from service.config import Settings, setting_fields

BEFORE: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "settings_before.json").read_text()
)
#: Values whose type alone does not say what is valid (URLs, files, JSON, networks).
SAMPLES: dict[str, str] = {
    "CIOQ_REDIS_URL": "redis://example.invalid:6390/3",
    "CIOQ_BROKER_URL": "redis://broker.invalid:6391/4",
    "CIOQ_REDIS_CA_FILE": __file__,
    "CIOQ_TRACK_URL": "https://track.example.invalid",
    "CIOQ_CDP_URL": "https://cdp.example.invalid",
    "CIOQ_APP_URL": "https://app.example.invalid",
    "CIOQ_WORKSPACES": '[{"name": "w2", "site_id": "s2", "api_key": "k2"}]',
    "CIOQ_TRUSTED_PROXIES": "10.0.0.0/8, ::1",
    "CIOQ_TLS_CERT": "/etc/cioq/cert.pem",
    "CIOQ_TLS_KEY": "/etc/cioq/key.pem",
}
#: A setting that is valid only with another one set.
PAIRED = {
    "CIOQ_TLS_CERT": "CIOQ_TLS_KEY",
    "CIOQ_TLS_KEY": "CIOQ_TLS_CERT",
    "CIOQ_REDIS_CLUSTER": "CIOQ_BROKER_URL",
}


def _plain(value: object) -> object:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _read(settings: Settings, name: str) -> object:
    group, _ = setting_fields()[name]
    return _plain(getattr(getattr(settings, group), name))


def _sample(variable: str) -> tuple[str, object]:
    """A valid value for `variable` other than its default, and what it reads as."""
    entry = BEFORE[variable]
    field = setting_fields()[entry["field"]][1]
    default = entry["default"]
    if variable in SAMPLES:
        raw = SAMPLES[variable]
        if isinstance(default, list):
            return raw, [part.strip() for part in raw.split(",")]
        return raw, raw
    if get_origin(field.annotation) is Literal:
        other = next(choice for choice in get_args(field.annotation) if choice != default)
        return str(other), other
    if isinstance(default, bool):
        return str(not default).lower(), not default
    if field.annotation == int | None:
        return "42", 42
    if isinstance(default, int):
        return str(default + 1), default + 1
    if isinstance(default, float):
        capped = any(hasattr(rule, "le") for rule in field.metadata)
        number = default / 2 if capped else default + 1
        return repr(number), number
    if isinstance(default, list):
        return "key-a,key-b", ["key-a", "key-b"]
    return "value-x", "value-x"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("CIOQ_") or name == "PORT":
            monkeypatch.delenv(name)
    return monkeypatch


def test_the_same_variables_name_the_same_settings() -> None:
    now = {}
    for name, (_, field) in setting_fields().items():
        first, *also = settings_env_names(name, field)
        now[first] = {"field": name, "also": also}
    before = {var: {"field": e["field"], "also": e["also"]} for var, e in BEFORE.items()}
    assert now == before


def test_every_default_is_unchanged(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings()
    changed = {
        variable: (entry["default"], _read(settings, entry["field"]))
        for variable, entry in BEFORE.items()
        if _read(settings, entry["field"]) != entry["default"]
    }
    assert changed == {}


@pytest.mark.parametrize(
    "variable", sorted({*BEFORE, *(also for e in BEFORE.values() for also in e["also"])})
)
def test_each_variable_sets_its_setting(clean_env: pytest.MonkeyPatch, variable: str) -> None:
    primary = next(v for v, e in BEFORE.items() if variable == v or variable in e["also"])
    raw, expected = _sample(primary)
    clean_env.setenv(variable, raw)
    if primary in PAIRED:
        clean_env.setenv(PAIRED[primary], SAMPLES[PAIRED[primary]])
    assert _read(Settings(), BEFORE[primary]["field"]) == expected


def test_flat_keywords_set_the_same_settings(clean_env: pytest.MonkeyPatch) -> None:
    """`Settings(**flat)`, as the suite builds settings, reaches every setting."""
    for variable, entry in BEFORE.items():
        raw, expected = _sample(variable)
        paired = {}
        if variable in PAIRED:
            other = PAIRED[variable]
            paired = {BEFORE[other]["field"]: SAMPLES[other]}
        settings = Settings(**{entry["field"]: raw, **paired})
        assert _read(settings, entry["field"]) == expected, variable
