"""Ingest keys name their producers: ``name:key``, else a fingerprint of the key."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import SecretStr

from service.config import (
    Settings,
    Workspace,
    check_keys,
    ingest_key_entries,
    named_key,
    producer_names,
)
from service.errors import ConfigError


def _fingerprint(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


@pytest.mark.parametrize(
    ("entry", "name", "key"),
    [
        ("billing:s3cret", "billing", "s3cret"),
        ("svc.api@eu-1:k:with:colons", "svc.api@eu-1", "k:with:colons"),
        ("plain-key", _fingerprint("plain-key"), "plain-key"),
        # Not a name: the whole entry is the key, named by its fingerprint.
        ("bad name:k", _fingerprint("bad name:k"), "bad name:k"),
        (":leading-colon", _fingerprint(":leading-colon"), ":leading-colon"),
        ("trailing:", _fingerprint("trailing:"), "trailing:"),
        ("x" * 41 + ":k", _fingerprint("x" * 41 + ":k"), "x" * 41 + ":k"),
    ],
)
def test_a_key_entry_names_its_producer_or_is_named_by_its_fingerprint(
    entry: str, name: str, key: str
) -> None:
    assert named_key(SecretStr(entry)) == (name, key)


def test_a_workspace_lists_ingest_then_bulk_keys_and_names_never_hold_the_key() -> None:
    ws = Workspace(
        site_id="s",
        api_key=SecretStr("k"),
        ingest_keys="billing:kb1,billing:kb2,bare-key",  # type: ignore[arg-type]
        bulk_ingest_keys="etl:ke",  # type: ignore[arg-type]
    )
    entries = ingest_key_entries(ws)
    assert [(e.producer, e.key, e.bulk) for e in entries] == [
        ("billing", "kb1", False),
        ("billing", "kb2", False),  # a rotated key keeps its producer's name
        (_fingerprint("bare-key"), "bare-key", False),
        ("etl", "ke", True),
    ]
    assert all(e.key not in repr(e) for e in entries)
    assert producer_names((ws,)) == {"billing", _fingerprint("bare-key"), "etl"}


def test_the_named_key_not_the_entry_must_be_unique_across_workspaces() -> None:
    other = '[{"name": "b", "site_id": "s2", "api_key": "k2", "ingest_keys": "crm:shared"}]'
    settings = Settings(ingest_keys="billing:shared", workspaces_json=other)
    with pytest.raises(ConfigError, match="one workspace"):
        _ = settings.workspaces


def test_an_admin_key_may_not_be_a_named_ingest_key() -> None:
    settings = Settings(ingest_keys="billing:shared", admin_keys="ops:shared")
    with pytest.raises(ConfigError, match="CIOQ_ADMIN_KEYS"):
        check_keys(settings)


def test_production_refuses_the_dev_ingest_key_under_a_name() -> None:
    settings = Settings(env="production", ingest_keys="billing:dev-ingest-key")
    with pytest.raises(ConfigError, match="development key"):
        check_keys(settings)
