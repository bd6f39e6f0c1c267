"""The groups the api process reads: keys, console, listener, backpressure, and what a call
may hold.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from service.config.named_keys import named_key
from service.config.values import DEV_ADMIN_KEY, CsvSecrets, CsvStrings


class KeySettings(BaseModel):
    """Read at start-up (`Settings.workspaces`), by the admin API's and the console's auth."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    workspaces_json: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CIOQ_WORKSPACES", "workspaces_json"),
        repr=False,  # holds API and ingest keys in clear
        description="More workspaces, as JSON inline or `@/path/to/file.json`: a list of "
        'objects with the fields under "Workspace fields" below, or an object of them by name.',
    )
    admin_keys: CsvSecrets = Field(
        default=(SecretStr(DEV_ADMIN_KEY),),
        description="Comma-separated keys of the admin API and the console, distinct from "
        "every ingest key; `name:key` names a key in the audit (a bare key is named by its "
        "fingerprint).",
    )


class ConsoleSettings(BaseModel):
    """Read by the console's sessions."""

    model_config = ConfigDict(frozen=True)

    console_secret: SecretStr | None = Field(
        default=None,
        description="Signs the console's session cookies (secret). Unset, a digest of the "
        "admin keys: the same on every replica, and it changes when the admin keys do.",
    )
    console_session_s: int = Field(
        default=28_800, ge=60, description="How long a console sign-in lasts."
    )


class ListenerSettings(BaseModel):
    """Read by the api process: `cioq api`, the listener and the ingest app."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    port: int = Field(
        default=8000,
        validation_alias=AliasChoices("PORT", "CIOQ_PORT", "port"),
        description="The api's port (`PORT` is the Procfile convention).",
    )
    host: str = Field(
        default="127.0.0.1", description="The api's bind address (`cioq api --host` overrides)."
    )
    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate: with `CIOQ_TLS_KEY`, the api serves HTTPS (the official "
        "Track SDK speaks only https).",
    )
    tls_key: Path | None = Field(
        default=None, description="PEM private key of `CIOQ_TLS_CERT`; set both or neither."
    )
    trusted_proxies: CsvStrings = Field(
        default=(),
        description="Comma-separated addresses or networks (`10.0.0.0/8`) whose "
        "`X-Forwarded-Proto`/`X-Forwarded-For` are believed: the ingress that terminates TLS. "
        'Unset, the headers are ignored from everyone (docs/operations.md, "Behind a '
        'proxy").',
    )
    max_request_bytes: int = Field(
        default=5_000_000,
        gt=0,
        description="Ingest request body cap (413 beyond; for gzip bodies, the inflated size). "
        "A batch bigger than Customer.io's limit is re-packed by the drain.",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="The request line and headers must arrive within this, else 408 and the "
        "connection is closed.",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A request body slower than this is cut off with 408.",
    )
    max_header_count: int = Field(
        default=100,
        ge=8,
        description="More headers than this: 431 and the connection is closed.",
    )
    max_header_bytes: int = Field(
        default=16_384,
        ge=1024,
        description="A request head larger than this: 431 as soon as the limit is crossed, "
        "and the connection is closed.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # uvicorn would take a typo for a literal host name and silently trust nobody.
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"CIOQ_TRUSTED_PROXIES: {entry!r} is no address or network"
                ) from exc
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> ListenerSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("CIOQ_TLS_CERT and CIOQ_TLS_KEY must be set together")
        return self


class BacklogSettings(BaseModel):
    """Read by ingest's backpressure (`service/store/backpressure.py`)."""

    model_config = ConfigDict(frozen=True)

    backlog_max_entries: int = Field(
        default=1_000_000,
        ge=1,
        description="Per workspace: over this many waiting jobs, ingest answers 503 with "
        "`Retry-After`.",
    )
    backlog_max_age_s: float = Field(
        default=3600.0,
        gt=0,
        description="Per workspace: while the oldest waiting job is older than this, ingest "
        "answers 503 with `Retry-After`.",
    )
    backlog_refresh_ms: int = Field(
        default=500,
        ge=0,
        description="How long an api process reuses a workspace's backlog reading, so "
        "backpressure costs no Redis round trip per request.",
    )
    backlog_retry_after_s: int = Field(
        default=5, ge=1, description="`Retry-After` of a backpressure 503."
    )


class LimitSettings(BaseModel):
    """Read by the lanes (`service/lanes/`): what ingest checks and how a request is built."""

    model_config = ConfigDict(frozen=True)

    max_op_bytes: int = Field(
        default=32_768,
        ge=256,
        description="Largest Track operation, checked at ingest.",
    )
    max_batch_bytes: int = Field(
        default=500_000,
        ge=1024,
        description="Largest Track `/api/v2/batch` body the drain sends, envelope included.",
    )
    cdp_max_call_bytes: int = Field(
        default=32_000,
        ge=256,
        description="Largest Pipelines call, checked at ingest on the stamped call "
        '(Customer.io\'s "32 KB", same reading).',
    )
    cdp_max_batch_bytes: int = Field(
        default=500_000,
        ge=1024,
        description="Largest Pipelines `/v1/batch` body the drain sends, envelope included "
        '(Customer.io\'s "500 KB", read as 1000-byte KB).',
    )
    stamp_timestamps: bool = Field(
        default=True,
        description="Stamp the accept time on calls and ops that carry none (Pipelines: "
        "ISO-8601; Track identify/event/page/screen: Unix seconds). Ids are always stamped.",
    )
    coalesce: bool = Field(
        default=False,
        description="Merge back-to-back identifies of one person inside a Track batch "
        "(`cioq_ops_coalesced_total` counts the ops saved).",
    )

    @model_validator(mode="after")
    def _check_sizes(self) -> LimitSettings:
        if self.max_op_bytes + 12 > self.max_batch_bytes:
            raise ValueError("max_batch_bytes must hold at least one op of max_op_bytes")
        if self.cdp_max_call_bytes + 12 > self.cdp_max_batch_bytes:
            raise ValueError("cdp_max_batch_bytes must hold one call of cdp_max_call_bytes")
        return self


def admin_key_entries(keys: KeySettings) -> tuple[tuple[str, str], ...]:
    """Each admin key as ``(name, key)``: ``name:key`` entries, else a fingerprint name."""
    return tuple(named_key(entry) for entry in keys.admin_keys)
