"""Settings: every knob cioq has, read once at process start.

One `Settings` class reads the environment (prefix ``CIOQ_``). Nothing reads it at
import time: entry points call `load_settings()` and pass the result down, and tests
build their own `Settings(...)`.

A *workspace* is one Customer.io account (site id + Track API key + region). The
default workspace comes from ``CIOQ_SITE_ID``/``CIOQ_API_KEY``/``CIOQ_REGION``/
``CIOQ_TRACK_URL``/``CIOQ_INGEST_KEYS``; more can be given as JSON in
``CIOQ_WORKSPACES`` (inline or ``@/path/to/file.json``). A producer's ingest key
decides its workspace, so no producer can make cioq send with another's credentials.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import orjson
from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.errors import ConfigError
from service.jobs import Lane, lanes_serving

REGION_TRACK_URLS: dict[str, str] = {
    "us": "https://track.customer.io",
    "eu": "https://track-eu.customer.io",
}
REGION_CDP_URLS: dict[str, str] = {
    "us": "https://cdp.customer.io",
    "eu": "https://cdp-eu.customer.io",
}
REGION_APP_URLS: dict[str, str] = {
    "us": "https://api.customer.io",
    "eu": "https://api-eu.customer.io",
}

#: Values that only make sense on a developer's machine; production refuses them.
DEV_SITE_ID = "dev-site"
DEV_API_KEY = "dev-api-key"
DEV_CDP_API_KEY = "dev-cdp-key"
DEV_APP_API_KEY = "dev-app-key"
DEV_INGEST_KEY = "dev-ingest-key"
DEV_ADMIN_KEY = "dev-admin-key"
#: Marks a value in the shipped example Secrets (deploy/k8s/overlays/*/secrets.env.example)
#: that must be replaced; production refuses any secret that still contains it.
PLACEHOLDER = "CHANGE_ME"

_WORKSPACE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class Workspace(BaseModel):
    """One Customer.io workspace and the keys its producers authenticate with."""

    model_config = {"frozen": True}

    name: str = "default"
    site_id: str
    api_key: SecretStr
    region: Literal["us", "eu"] = "us"
    track_url: str | None = None
    ingest_keys: tuple[SecretStr, ...] = ()
    #: Keys whose requests are bulk traffic (README "Live and bulk traffic").
    bulk_ingest_keys: tuple[SecretStr, ...] = ()
    #: Customer.io's id of the workspace, echoed by ``GET /api/v1/accounts/region``.
    environment_id: int | None = None
    #: Pipelines (CDP) write key; without one the workspace refuses Pipelines calls.
    cdp_api_key: SecretStr | None = None
    cdp_url: str | None = None
    #: App API key (Bearer); without one the workspace refuses App API sends and reads.
    app_api_key: SecretStr | None = None
    app_url: str | None = None
    #: Resend a send whose outcome is unknown (read timeout, reset, 500/502/504): MAY
    #: DELIVER TWICE. Off by default: such sends go to the dead letters as ``ambiguous``.
    app_resend_ambiguous: bool = False
    #: cioq's checks beyond Customer.io's (docs/validation-rules.md "Opt-in strictness"):
    #: refuse at ingest what Customer.io would silently drop or has no stated rule for.
    #: Off by default, so a conforming call Customer.io takes is taken here too.
    strict_validation: bool = False

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _WORKSPACE_NAME.match(value):
            raise ValueError("workspace name must match [a-z0-9][a-z0-9_-]{0,39}")
        return value

    @field_validator("track_url", "cdp_url", "app_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("track_url, cdp_url and app_url must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("cdp_api_key", "app_api_key")
    @classmethod
    def _blank_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None

    @property
    def base_url(self) -> str:
        """Where this workspace's Track API calls go: the override, else the region's host."""
        return self.track_url or REGION_TRACK_URLS[self.region]

    @property
    def lanes(self) -> tuple[Lane, ...]:
        """The registered lanes this workspace delivers (Track always, others with their keys)."""
        return lanes_serving(self)

    @property
    def cdp_base_url(self) -> str:
        """Where this workspace's Pipelines calls go: the override, else the region's host."""
        return self.cdp_url or REGION_CDP_URLS[self.region]

    @property
    def app_base_url(self) -> str:
        """Where this workspace's App API calls go: the override, else the region's host."""
        return self.app_url or REGION_APP_URLS[self.region]


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    """Every setting of cioq; see README "Configuration" for each one's meaning."""

    model_config = SettingsConfigDict(
        env_prefix="CIOQ_",
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
    )

    env: Literal["development", "production"] = "development"

    # Redis and Celery
    # URLs may carry a Redis password; keep them out of repr.
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", repr=False)
    broker_url: str | None = Field(default=None, repr=False)
    # Redis Cluster: redis_url names any seed node; the broker must be a standalone Redis.
    redis_cluster: bool = False
    shards: int = Field(default=32, ge=1, le=4096)
    # TLS (rediss://) is always verified; a private CA's bundle for the store and the broker.
    redis_ca_file: str | None = None
    # write: Redis applied it; replica: also received by a replica (no AOF needed);
    # fsync: on the primary's disk; replicated: on disk and received by a replica.
    durability: Literal["write", "replica", "fsync", "replicated"] = "write"
    durability_timeout_ms: int = Field(default=5000, ge=1)
    redis_timeout_s: float = Field(default=5.0, gt=0)
    startup_redis_wait_s: float = Field(default=30.0, ge=0)
    # Backpressure: ingest answers 503 while a workspace's backlog is over either mark.
    backlog_max_entries: int = Field(default=1_000_000, ge=1)
    backlog_max_age_s: float = Field(default=3600.0, gt=0)
    backlog_refresh_ms: int = Field(default=500, ge=0)
    backlog_retry_after_s: int = Field(default=5, ge=1)

    # Default workspace
    site_id: str = DEV_SITE_ID
    api_key: SecretStr = SecretStr(DEV_API_KEY)
    region: Literal["us", "eu"] = "us"
    track_url: str | None = None
    environment_id: int | None = None
    cdp_api_key: SecretStr | None = None
    cdp_url: str | None = None
    app_api_key: SecretStr | None = None
    app_url: str | None = None
    app_resend_ambiguous: bool = False
    # cioq's checks beyond Customer.io's, for the default workspace (docs/validation-rules.md).
    strict_validation: bool = False
    ingest_keys: Annotated[tuple[SecretStr, ...], NoDecode] = (SecretStr(DEV_INGEST_KEY),)
    bulk_ingest_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    workspaces_json: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CIOQ_WORKSPACES", "workspaces_json"),
        repr=False,  # holds API and ingest keys in clear
    )
    # Entries are ``name:key`` or a bare key (named by its fingerprint): the audit says who.
    admin_keys: Annotated[tuple[SecretStr, ...], NoDecode] = (SecretStr(DEV_ADMIN_KEY),)
    # Operator console (service/console): signs session cookies; unset, a digest of the admin keys.
    console_secret: SecretStr | None = None
    console_session_s: int = Field(default=28_800, ge=60)

    # Ingest API
    port: int = Field(default=8000, validation_alias=AliasChoices("PORT", "CIOQ_PORT", "port"))
    host: str = "127.0.0.1"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Addresses or networks (comma-separated, e.g. 10.0.0.0/8) whose X-Forwarded-Proto/For
    # are believed: the ingress that terminates TLS. Empty: the headers are ignored.
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    max_request_bytes: int = Field(default=5_000_000, gt=0)
    # Listener limits (service/api/listener.py): slow or bloated requests cannot hold it.
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    max_header_count: int = Field(default=100, ge=8)
    max_header_bytes: int = Field(default=16_384, ge=1024)
    idempotency_window_s: float = Field(default=86_400.0, gt=0)

    # Packing and delivery
    max_batch_bytes: int = Field(default=500_000, ge=1024)
    max_op_bytes: int = Field(default=32_768, ge=256)
    linger_ms: int = Field(default=1000, ge=0)
    max_ops_per_read: int = Field(default=4000, ge=1)
    # Merge back-to-back identifies of one person inside a batch (service/lanes/track/coalesce.py).
    coalesce: bool = False
    # Pipelines limits: "500 KB" per batch and "32 KB" per call, read as 1000-byte KB (README).
    cdp_max_batch_bytes: int = Field(default=500_000, ge=1024)
    cdp_max_call_bytes: int = Field(default=32_000, ge=256)
    # Stamp a call's accept time where the producer sent none (README "Time of a call").
    stamp_timestamps: bool = True
    upstream_timeout_s: float = Field(default=20.0, gt=0)
    lease_ms: int = Field(default=60_000, ge=1000)
    #: Accept a lease shorter than one send step (tests and chaos runs that provoke lease
    #: loss on purpose, for fast takeovers); refused otherwise.
    allow_short_lease: bool = False
    # Fill a request from the heads of several shards of a workspace (README "Packing
    # across shards"); false packs each shard on its own (the design before, for benches).
    pack_across_shards: bool = True
    # How long one drain may hold a worker process: a drain triggered by live traffic, and
    # one working through a backlog or bulk jobs (short, so live triggers get a process).
    drain_budget_s: float = Field(default=2.0, gt=0)
    bulk_drain_budget_s: float = Field(default=0.25, gt=0)
    sweep_interval_ms: int = Field(default=1000, ge=10)

    # App API lane (README "App API"): Customer.io's published limits are the defaults.
    app_send_rps: float = Field(default=100.0, gt=0)
    app_rps: float = Field(default=10.0, gt=0)
    app_broadcast_interval_s: float = Field(default=10.0, gt=0)
    # Share of a limit cioq spends: grant-to-arrival jitter must not push a second over it.
    app_rate_headroom: float = Field(default=0.95, gt=0, le=1)
    # How long a send's ingest request waits for Customer.io's answer before answering 202.
    app_send_wait_ms: int = Field(default=3000, ge=0)
    # How long a read waits for a token of the 10/s budget before answering 429.
    app_read_wait_ms: int = Field(default=2000, ge=0)
    app_outcome_ttl_s: float = Field(default=86_400.0, gt=0)
    # A drain sleeps for a send token up to this long; longer waits hand the shard back.
    app_token_wait_max_ms: int = Field(default=1000, ge=0)

    # Retries, pauses, dead letters
    retry_base_ms: int = Field(default=1000, ge=0)
    retry_cap_ms: int = Field(default=300_000, ge=0)
    retry_max_attempts: int = Field(default=20, ge=1)
    retry_max_age_s: float = Field(default=86_400.0, gt=0)
    throttle_pause_ms: int = Field(default=5000, ge=0)
    setup_pause_ms: int = Field(default=30_000, ge=0)
    crash_limit: int = Field(default=3, ge=1)
    shutdown_grace_s: float = Field(default=25.0, gt=0)

    # Metrics (see README "Operations")
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=9100, ge=1, le=65535)
    metrics_redis_timeout_s: float = Field(default=0.5, gt=0)
    drain_rate_window_s: int = Field(default=60, ge=1)

    @field_validator("ingest_keys", "bulk_ingest_keys", "admin_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_proxies(cls, value: object) -> object:
        return _split_csv(value)

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
    def _check_shard_and_size(self) -> Settings:
        if self.max_op_bytes + 12 > self.max_batch_bytes:
            raise ValueError("max_batch_bytes must hold at least one op of max_op_bytes")
        if self.cdp_max_call_bytes + 12 > self.cdp_max_batch_bytes:
            raise ValueError("cdp_max_batch_bytes must hold one call of cdp_max_call_bytes")
        if self.upstream_timeout_s >= self.shutdown_grace_s:
            # A stopping worker finishes the request in flight; it must fit the grace period.
            raise ValueError(
                "CIOQ_UPSTREAM_TIMEOUT_S must be below CIOQ_SHUTDOWN_GRACE_S, so a stopping "
                "worker can finish its request in flight"
            )
        if self.lease_ms < self.min_lease_ms and not self.allow_short_lease:
            # A drain renews once a third of its lease has passed, so a step may start
            # with two thirds left; a lease shorter than that makes lease loss routine.
            # (Lease loss never sends twice: every drain write is fenced; it only costs.)
            raise ValueError(
                f"CIOQ_LEASE_MS={self.lease_ms} is shorter than one send step can take "
                f"(rate wait + connect + read = {self.send_step_max_ms} ms, which must fit "
                f"in two thirds of the lease): set it to at least {self.min_lease_ms}"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("CIOQ_TLS_CERT and CIOQ_TLS_KEY must be set together")
        if self.redis_ca_file is not None and not Path(self.redis_ca_file).is_file():
            raise ValueError(f"CIOQ_REDIS_CA_FILE {self.redis_ca_file!r} is not a readable file")
        if self.redis_cluster and self.broker_url in (None, self.redis_url):
            # Celery's Redis transport speaks to one node; on a cluster it would get MOVED.
            raise ValueError(
                "CIOQ_REDIS_CLUSTER=true needs CIOQ_BROKER_URL naming a separate standalone "
                "Redis: Celery's Redis broker does not support Redis Cluster"
            )
        return self

    @property
    def send_step_max_ms(self) -> int:
        """The longest one send can hold a drain: the App rate wait, then one request's
        connect and read timeouts (`service.delivery.upstream`)."""
        request_s = min(self.upstream_timeout_s, 10.0) + self.upstream_timeout_s
        return self.app_token_wait_max_ms + int(request_s * 1000)

    @property
    def min_lease_ms(self) -> int:
        return (3 * self.send_step_max_ms + 1) // 2

    @property
    def trigger_ttl_ms(self) -> int:
        """How long a shard's trigger marker debounces further triggers.

        It outlives the linger wait, so a burst of writes to one shard sends one trigger.
        """
        return max(2 * self.linger_ms, 1000)

    @property
    def celery_broker_url(self) -> str:
        """The broker for drain triggers: its own setting, else the queue's Redis."""
        return self.broker_url or self.redis_url

    @cached_property
    def workspaces(self) -> tuple[Workspace, ...]:
        """The default workspace first, then those of ``CIOQ_WORKSPACES``."""
        default = Workspace(
            name="default",
            site_id=self.site_id,
            api_key=self.api_key,
            region=self.region,
            track_url=self.track_url,
            ingest_keys=self.ingest_keys,
            bulk_ingest_keys=self.bulk_ingest_keys,
            environment_id=self.environment_id,
            cdp_api_key=self.cdp_api_key,
            cdp_url=self.cdp_url,
            app_api_key=self.app_api_key,
            app_url=self.app_url,
            app_resend_ambiguous=self.app_resend_ambiguous,
            strict_validation=self.strict_validation,
        )
        extra = _load_workspaces(self.workspaces_json)
        found = (default, *extra) if not any(w.name == "default" for w in extra) else extra
        names = [w.name for w in found]
        if len(names) != len(set(names)):
            raise ConfigError(f"workspace names must be unique, got {names}")
        keys = [k.get_secret_value() for w in found for k in (*w.ingest_keys, *w.bulk_ingest_keys)]
        if len(keys) != len(set(keys)):
            raise ConfigError("an ingest key may belong to one workspace only")
        return found

    def workspace(self, name: str) -> Workspace:
        """The workspace called `name`; ConfigError if there is none."""
        for ws in self.workspaces:
            if ws.name == name:
                return ws
        raise ConfigError(f"unknown workspace {name!r}")


def _load_workspaces(raw: str | None) -> tuple[Workspace, ...]:
    if not raw:
        return ()
    text = Path(raw[1:]).read_text() if raw.startswith("@") else raw
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"CIOQ_WORKSPACES is not valid JSON: {exc}") from exc
    if isinstance(data, dict):
        data = [{"name": name, **spec} for name, spec in data.items()]
    if not isinstance(data, list):
        raise ConfigError("CIOQ_WORKSPACES must be a JSON list or object of workspaces")
    for item in data:
        for field in ("ingest_keys", "bulk_ingest_keys"):
            if isinstance(item, dict) and isinstance(item.get(field), str):
                item[field] = _split_csv(item[field])
    return tuple(Workspace.model_validate(item) for item in data)


_ADMIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,39}$")


def admin_key_entries(settings: Settings) -> tuple[tuple[str, str], ...]:
    """Each admin key as ``(name, key)``: ``name:key`` entries, else a fingerprint name."""
    out: list[tuple[str, str]] = []
    for entry in settings.admin_keys:
        name, sep, key = entry.get_secret_value().partition(":")
        if not (sep and key and _ADMIN_NAME.match(name)):
            key = entry.get_secret_value()
            name = "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]
        out.append((name, key))
    return tuple(out)


def check_keys(settings: Settings) -> None:
    """Refuse admin keys that are also ingest keys, and dev, empty or placeholder secrets in
    production."""
    ingest = {
        k.get_secret_value()
        for ws in settings.workspaces
        for k in (*ws.ingest_keys, *ws.bulk_ingest_keys)
    }
    admin = {key for _, key in admin_key_entries(settings)}
    if ingest & admin:
        raise ConfigError("CIOQ_ADMIN_KEYS must not share a key with any workspace's ingest keys")
    if settings.env != "production":
        return
    problems: list[str] = []
    if not admin or admin & {"", DEV_ADMIN_KEY}:
        problems.append("CIOQ_ADMIN_KEYS is empty or holds the development key")
    for ws in settings.workspaces:
        keys = {k.get_secret_value() for k in ws.ingest_keys}
        if not keys or keys & {"", DEV_INGEST_KEY}:
            problems.append(f"workspace {ws.name!r}: ingest keys are empty or the development key")
        if ws.api_key.get_secret_value() in ("", DEV_API_KEY):
            problems.append(f"workspace {ws.name!r}: API key is empty or the development key")
        if ws.cdp_api_key is not None and ws.cdp_api_key.get_secret_value() == DEV_CDP_API_KEY:
            problems.append(f"workspace {ws.name!r}: Pipelines key is the development key")
        if ws.app_api_key is not None and ws.app_api_key.get_secret_value() == DEV_APP_API_KEY:
            problems.append(f"workspace {ws.name!r}: App API key is the development key")
        if ws.site_id in ("", DEV_SITE_ID):
            problems.append(f"workspace {ws.name!r}: site id is empty or the development one")
    problems.extend(
        f"{name} still holds the {PLACEHOLDER} placeholder" for name in _placeholders(settings)
    )
    if problems:
        raise ConfigError("CIOQ_ENV=production refuses: " + "; ".join(problems))


def _placeholders(settings: Settings) -> list[str]:
    """The settings whose value still holds the example Secrets' placeholder."""
    values: dict[str, str] = {
        "CIOQ_REDIS_URL": settings.redis_url,
        "CIOQ_BROKER_URL": settings.broker_url or "",
        "CIOQ_ADMIN_KEYS": ",".join(k.get_secret_value() for k in settings.admin_keys),
    }
    for ws in settings.workspaces:
        where = "" if ws.name == "default" else f" (workspace {ws.name})"
        values[f"CIOQ_SITE_ID{where}"] = ws.site_id
        values[f"CIOQ_API_KEY{where}"] = ws.api_key.get_secret_value()
        values[f"CIOQ_INGEST_KEYS{where}"] = ",".join(k.get_secret_value() for k in ws.ingest_keys)
    return [name for name, value in values.items() if PLACEHOLDER in value]


def load_settings() -> Settings:
    """Read the environment once; raises ConfigError with every problem found."""
    try:
        settings = Settings()
        _ = settings.workspaces
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    check_keys(settings)
    return settings
