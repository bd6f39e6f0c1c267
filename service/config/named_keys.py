"""Configured keys with the name of who holds them: ``name:key``, else a fingerprint.

Admin keys name the operator in audits; ingest keys name the producer (the service) in
metrics, dead letters and ``cioq status``. Names come from configuration only, so a label
built from them stays bounded.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import SecretStr

if TYPE_CHECKING:
    from service.config.workspace import Workspace

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,39}$")


def named_key(entry: SecretStr) -> tuple[str, str]:
    """A configured key as ``(name, key)``: ``name:key``, else named by its fingerprint
    (never by the key itself, which would leak into labels, audits and listings)."""
    name, sep, key = entry.get_secret_value().partition(":")
    if not (sep and key and _NAME.match(name)):
        key = entry.get_secret_value()
        name = "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]
    return name, key


@dataclass(frozen=True, slots=True)
class IngestKey:
    """One ingest key of a workspace: the producer (service) it names, and whether it is bulk."""

    producer: str
    key: str = field(repr=False)
    bulk: bool = False


def ingest_key_entries(ws: Workspace) -> tuple[IngestKey, ...]:
    """The workspace's ingest keys (then its bulk ones), each with its producer's name."""
    return tuple(
        IngestKey(*named_key(entry), bulk=bulk)
        for keys, bulk in ((ws.ingest_keys, False), (ws.bulk_ingest_keys, True))
        for entry in keys
    )


def producer_names(workspaces: tuple[Workspace, ...]) -> frozenset[str]:
    """Every producer name the configuration gives: the only values of a ``producer`` label."""
    return frozenset(entry.producer for ws in workspaces for entry in ingest_key_entries(ws))
