"""Settings: every knob cioq has, read once at process start.

One `Settings` class reads the environment (prefix ``CIOQ_``), in groups by the code
that reads them (`RedisSettings`, `DrainSettings`, `RetrySettings`...); each consumer is
handed its group only. The variables stay flat: a setting is read from ``CIOQ_<FIELD>``
whichever group holds it. Nothing reads the environment at import time: entry points call
`load_settings()` and pass the result down, and tests build their own `Settings(...)`
with the same flat names (``Settings(shards=4)``).

A *workspace* is one Customer.io account (site id + Track API key + region). The
default workspace comes from ``CIOQ_SITE_ID``/``CIOQ_API_KEY``/``CIOQ_REGION``/
``CIOQ_TRACK_URL``/``CIOQ_INGEST_KEYS``; more can be given as JSON in
``CIOQ_WORKSPACES`` (inline or ``@/path/to/file.json``). A producer's ingest key
decides its workspace, so no producer can make cioq send with another's credentials.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import re
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

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


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


#: Keys in one variable or JSON string, comma-separated (`a,b`), or a list.
CsvSecrets = Annotated[tuple[SecretStr, ...], NoDecode, BeforeValidator(_split_csv)]
#: Addresses or networks, comma-separated, or a list.
CsvStrings = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split_csv)]


class Workspace(BaseModel):
    """One Customer.io workspace and the keys its producers authenticate with."""

    model_config = {"frozen": True}

    name: str = Field(
        default="default",
        description="The workspace's name in cioq: Redis keys, metric labels, the CLI, the "
        "console and the admin API use it. Matches `[a-z0-9][a-z0-9_-]{0,39}`; the default "
        "workspace is `default`.",
    )
    site_id: str = Field(
        description="Customer.io site id: the user name of the Track API's Basic auth."
    )
    api_key: SecretStr = Field(
        description="Track API key (secret): the password of the Track API's Basic auth."
    )
    region: Literal["us", "eu"] = Field(
        default="us",
        description="Customer.io's data center: `us` sends to `https://track.customer.io`, "
        "`https://cdp.customer.io` and `https://api.customer.io`; `eu` to their `-eu` hosts.",
    )
    track_url: str | None = Field(
        default=None,
        description="Overrides the region's Track API base URL (e.g. the sandbox); `http://` "
        "or `https://`.",
    )
    ingest_keys: CsvSecrets = Field(
        default=(),
        description="Keys the workspace's producers send (Basic `site_id:key`, Basic `key:` "
        "or `Bearer key`); the key picks the workspace, so each belongs to one workspace only. "
        "`name:key` names the producer (the service) that sends with it, in metrics, dead "
        "letters and `cioq status`; a bare key is named by its fingerprint (`key-` and 8 hex).",
    )
    bulk_ingest_keys: CsvSecrets = Field(
        default=(),
        description="Ingest keys whose requests are bulk traffic whatever `X-Cioq-Traffic` "
        "says (docs/live-and-bulk.md); `name:key` as for `ingest_keys`.",
    )
    environment_id: int | None = Field(
        default=None,
        description="Customer.io's id of the workspace, echoed as `environment_id` by "
        "`GET /api/v1/accounts/region` (`null` when unset).",
    )
    cdp_api_key: SecretStr | None = Field(
        default=None,
        description="Pipelines (CDP) write key (secret). Without one the workspace refuses "
        "Pipelines calls with 403 (`rule: lane_disabled`): cioq accepts nothing it cannot "
        "deliver.",
    )
    cdp_url: str | None = Field(
        default=None,
        description="Overrides the region's Pipelines host (`us`: `https://cdp.customer.io`, "
        "`eu`: `https://cdp-eu.customer.io`).",
    )
    app_api_key: SecretStr | None = Field(
        default=None,
        description="App API key (secret, sent as `Bearer`). Without one the workspace refuses "
        "App API sends, broadcast triggers and reads with 403.",
    )
    app_url: str | None = Field(
        default=None,
        description="Overrides the region's App API host (`us`: `https://api.customer.io`, "
        "`eu`: `https://api-eu.customer.io`).",
    )
    app_resend_ambiguous: bool = Field(
        default=False,
        description="Resend App sends whose outcome is unknown (read timeout, reset, "
        "500/502/504): MAY DELIVER TWICE. Off, such sends are dead-lettered as `ambiguous` "
        "for an operator (docs/app.md).",
    )
    strict_validation: bool = Field(
        default=False,
        description="cioq's checks beyond Customer.io's (docs/validation-rules.md, \"Opt-in "
        'strictness"): refuse at ingest what Customer.io would silently drop or has no stated '
        "rule for. Off, a conforming call Customer.io takes is taken here too.",
    )

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


class RedisSettings(BaseModel):
    """Read by the store's connections and start-up checks and by the trigger broker."""

    model_config = ConfigDict(frozen=True)

    env: Literal["development", "production"] = Field(
        default="development",
        description="`production` refuses to start with empty, development or `CHANGE_ME` "
        "placeholder keys, and with an evicting Redis (development only logs a warning).",
    )
    # URLs may carry a Redis password; keep them out of repr.
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        repr=False,
        description="The queue's Redis: streams, leases, dead letters (`rediss://` for TLS). "
        "In cluster mode any seed node or the configuration endpoint.",
    )
    broker_url: str | None = Field(
        default=None,
        repr=False,
        description="Celery broker for the drain triggers; unset, `CIOQ_REDIS_URL`. In cluster "
        "mode a separate standalone Redis (required; Celery's Redis broker cannot use a "
        "cluster).",
    )
    redis_cluster: bool = Field(
        default=False,
        description="The queue's Redis is a Redis/Valkey Cluster; `CIOQ_REDIS_URL` names any "
        "seed node (docs/redis-cluster.md).",
    )
    redis_ca_file: str | None = Field(
        default=None,
        description="PEM bundle of the CA that signed the Redis servers' certificates, for a "
        "private CA (default: the system trust store). With `rediss://` the store and the "
        "broker always verify the certificate and host name "
        "(`tests/e2e/store/test_redis_tls.py`).",
    )
    redis_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Socket connect and read timeout of every store connection (api, workers, "
        "sweeper, CLI, start-up checks).",
    )
    redis_outage_wait_s: float = Field(
        default=5.0,
        ge=0,
        description="How long ingest keeps trying to reach a Redis that refuses connections "
        "(a restart, a failover of one Redis), counted from the outage's first failed "
        "connect, before it answers 503 with `Retry-After` (then at once, until Redis is "
        "back): only commands not yet sent are held, never one that may have run. 0 answers "
        "503 at once. Keep it under the producers' HTTP timeout.",
    )
    startup_redis_wait_s: float = Field(
        default=30.0,
        ge=0,
        description="How long a worker waits for Redis at start-up before refusing to start "
        "(the api starts anyway and answers 503 until Redis is up and checked).",
    )
    metrics_redis_timeout_s: float = Field(
        default=0.5,
        gt=0,
        description="How long a scrape of the api's `/metrics` waits for the queue gauges "
        "from Redis; beyond it `cioq_queue_state_up` is 0.",
    )
    durability: Literal["write", "replica", "fsync", "replicated"] = Field(
        default="write",
        description="What a 2xx promises: `write` (applied in Redis), `replica` (also received "
        "by a replica; no AOF needed), `fsync` (on the primary's disk) or `replicated` (on "
        "disk and on a replica). Start-up refuses a Redis that cannot keep it "
        '(docs/deploy.md, "Durability per provider").',
    )
    durability_timeout_ms: int = Field(
        default=5000,
        ge=1,
        description="How long a write waits for `WAITAOF`/`WAIT` before ingest answers 503.",
    )

    @model_validator(mode="after")
    def _check_redis(self) -> RedisSettings:
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
    def celery_broker_url(self) -> str:
        """The broker for drain triggers: its own setting, else the queue's Redis."""
        return self.broker_url or self.redis_url


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


class QueueSettings(BaseModel):
    """Read by the store's writers and readers, the sweeper and the drain: the shape of the
    queue and how long its markers last."""

    model_config = ConfigDict(frozen=True)

    shards: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="Streams per workspace and lane; at least the total worker concurrency. "
        "Drain the queue before changing it.",
    )
    linger_ms: int = Field(
        default=1000,
        ge=0,
        description="How long a request that is not full may wait for more ops, from its "
        "oldest op (whichever shard holds it).",
    )
    max_ops_per_read: int = Field(
        default=4000,
        ge=1,
        description="Entries a drain reads from a shard's stream at a time; a shard holding "
        "at least this many is a backlog, left to drains of its own.",
    )
    idempotency_window_s: float = Field(
        default=86_400.0,
        gt=0,
        description="How long an `Idempotency-Key`'s first answer, and its per-shard request "
        "markers, are kept; also how long a dead-letter replay's marker guards against a "
        "second replay.",
    )

    @property
    def trigger_ttl_ms(self) -> int:
        """How long a shard's trigger marker debounces further triggers.

        It outlives the linger wait, so a burst of writes to one shard sends one trigger.
        """
        return max(2 * self.linger_ms, 1000)


class DrainSettings(BaseModel):
    """Read by the drain, the sweeper, the worker process and the lanes' clients."""

    model_config = ConfigDict(frozen=True)

    lease_ms: int = Field(
        default=60_000,
        ge=1000,
        description="Shard lease: a crashed drain's shard is taken over after this. Refused "
        "at start-up below 1.5 times one send step (App rate wait + upstream connect + read: "
        "46,500 ms at the defaults).",
    )
    allow_short_lease: bool = Field(
        default=False,
        description="Accept a `CIOQ_LEASE_MS` shorter than one send step (tests and chaos "
        "runs that provoke lease loss on purpose).",
    )
    pack_across_shards: bool = Field(
        default=True,
        description="Fill a request from the heads of several shards of a workspace lane; "
        "`false` packs shard by shard (kept for `bench/live.py`).",
    )
    # How long one drain may hold a worker process: a drain triggered by live traffic, and
    # one working through a backlog or bulk jobs (short, so live triggers get a process).
    drain_budget_s: float = Field(
        default=2.0,
        gt=0,
        description="A drain triggered by live traffic hands its shards back after this, for "
        "fairness.",
    )
    bulk_drain_budget_s: float = Field(
        default=0.25,
        gt=0,
        description="The same for drains from the bulk queue (backlogs, bulk traffic): short, "
        "so a live trigger waits for a worker process about this long at most.",
    )
    sweep_interval_ms: int = Field(
        default=1000,
        ge=10,
        description="The sweeper's period: how often it re-triggers shards with work and no drain.",
    )
    crash_limit: int = Field(
        default=3,
        ge=1,
        description="Deaths without an outcome (worker killed mid-send) of a lone job before "
        "it is quarantined as `crash_loop`.",
    )
    upstream_timeout_s: float = Field(
        default=20.0,
        gt=0,
        description="Customer.io request timeout; must be below `CIOQ_SHUTDOWN_GRACE_S`.",
    )
    shutdown_grace_s: float = Field(
        default=25.0,
        gt=0,
        description="A stopping worker's warm-shutdown budget; set the pod's "
        "`terminationGracePeriodSeconds` above it.",
    )

    @model_validator(mode="after")
    def _check_grace(self) -> DrainSettings:
        if self.upstream_timeout_s >= self.shutdown_grace_s:
            # A stopping worker finishes the request in flight; it must fit the grace period.
            raise ValueError(
                "CIOQ_UPSTREAM_TIMEOUT_S must be below CIOQ_SHUTDOWN_GRACE_S, so a stopping "
                "worker can finish its request in flight"
            )
        return self


class RetrySettings(BaseModel):
    """Read by the drain's failure handling (`workers/drain/blocked.py`)."""

    model_config = ConfigDict(frozen=True)

    retry_base_ms: int = Field(
        default=1000,
        ge=0,
        description="Base of the full-jitter backoff after a transient "
        "failure (408, 5xx, timeouts).",
    )
    retry_cap_ms: int = Field(
        default=300_000, ge=0, description="Longest backoff between two tries."
    )
    retry_max_attempts: int = Field(
        default=20,
        ge=1,
        description="Tries before a job is dead-lettered (`max_attempts`).",
    )
    retry_max_age_s: float = Field(
        default=86_400.0,
        gt=0,
        description="Age after which a job that still fails is dead-lettered (`max_age`).",
    )
    throttle_pause_ms: int = Field(
        default=5000,
        ge=0,
        description="How long a workspace lane pauses after a 429 without `Retry-After`.",
    )
    setup_pause_ms: int = Field(
        default=30_000,
        ge=0,
        description="How long a workspace lane pauses after a 401/403 (jobs kept), then "
        "probes again.",
    )


class AppLaneSettings(BaseModel):
    """Read by the App API lane (`service/lanes/app/`): Customer.io's published limits are
    the defaults."""

    model_config = ConfigDict(frozen=True)

    app_send_rps: float = Field(
        default=100.0,
        gt=0,
        description="App API sends per second per workspace, all processes together.",
    )
    app_rps: float = Field(
        default=10.0,
        gt=0,
        description="Other App API calls (reads, message lookups) per second per workspace.",
    )
    app_broadcast_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds between two triggers of one broadcast.",
    )
    app_rate_headroom: float = Field(
        default=0.95,
        gt=0,
        le=1,
        description="Share of each App API rate limit cioq spends, so the jitter between a "
        "slot and the request's arrival cannot push a second over the limit.",
    )
    app_send_wait_ms: int = Field(
        default=3000,
        ge=0,
        description="How long an App send's ingest request waits for Customer.io's answer "
        "before answering 202 with a status URL.",
    )
    app_read_wait_ms: int = Field(
        default=2000,
        ge=0,
        description="How long a proxied App API read waits for a rate slot before answering "
        "429 with `Retry-After`.",
    )
    app_outcome_ttl_s: float = Field(
        default=86_400.0,
        gt=0,
        description="How long an App send's outcome (what its status URL answers) is kept.",
    )
    app_token_wait_max_ms: int = Field(
        default=1000,
        ge=0,
        description="A drain waits up to this for an App send slot; a longer wait hands the "
        "shard back until the slot.",
    )
    late_poll_interval_s: float = Field(
        default=30.0,
        gt=0,
        description="How often the poller of late failures reads each workspace's activity "
        "log (`GET /v1/activities`, per failure type), when the workspace has an App API key.",
    )
    late_poll_read_share: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="Share of the App read budget (`CIOQ_APP_RPS`) the poller of late failures "
        "may spend; proxied reads and send confirmations keep the rest.",
    )
    late_failures_max_entries: int = Field(
        default=100_000,
        ge=1,
        description="Late failures kept per workspace (a capped stream; the oldest go first).",
    )


class MetricsSettings(BaseModel):
    """Read by the workers' `/metrics` server and the queue gauges."""

    model_config = ConfigDict(frozen=True)

    worker_metrics_host: str = Field(
        default="127.0.0.1",
        description="Bind address of a worker's `/metrics` server.",
    )
    worker_metrics_port: int = Field(
        default=9100,
        ge=1,
        le=65535,
        description="Port of a worker's `/metrics` server (the Celery main process adds up "
        "its prefork children).",
    )
    drain_rate_window_s: int = Field(
        default=60,
        ge=1,
        description="Window of the drain rate behind `cioq_backlog_seconds`, the scaling signal.",
    )


#: What the default workspace holds where no variable says otherwise: development values,
#: which production refuses (`check_keys`). A `CIOQ_WORKSPACES` entry has no such defaults.
DEV_WORKSPACE: dict[str, object] = {
    "name": "default",
    "site_id": DEV_SITE_ID,
    "api_key": SecretStr(DEV_API_KEY),
    "ingest_keys": (SecretStr(DEV_INGEST_KEY),),
}

#: The default workspace's fields that a variable sets: every field of a `CIOQ_WORKSPACES`
#: entry but its name (``CIOQ_SITE_ID`` sets ``site_id``...).
DEFAULT_WORKSPACE_FIELDS: tuple[str, ...] = tuple(n for n in Workspace.model_fields if n != "name")


class Settings(BaseSettings):
    """Every setting of cioq, in groups by the code that reads them; each consumer is
    handed its group. Each field's description is its documentation: `scripts/gen-config-docs`
    renders the groups, in this order, into docs/configuration.md (a group field's `title`
    and `description` head its section).

    The environment stays flat: every setting is read from ``CIOQ_<FIELD>``, whatever group
    holds it, and ``Settings(shards=4, lease_ms=...)`` takes the same flat names."""

    model_config = SettingsConfigDict(
        env_prefix="CIOQ_",
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
    )

    redis: RedisSettings = Field(
        default_factory=RedisSettings,
        title="Environment and Redis",
        description="Where the queue lives, how cioq talks to it, and what a 2xx from ingest "
        "promises; start-up refuses a Redis that cannot keep it.",
    )
    default_workspace: Workspace = Field(
        default_factory=lambda: Workspace.model_validate(DEV_WORKSPACE),
        title="Default workspace",
        description="The workspace named `default`: each field of a `CIOQ_WORKSPACES` entry "
        "([Workspace fields](#workspace-fields)) but its name is read from `CIOQ_<FIELD>`.",
    )
    keys: KeySettings = Field(
        default_factory=KeySettings,
        title="More workspaces and admin keys",
        description="Workspaces beyond the default one, and the keys of the admin API and "
        "the console.",
    )
    listener: ListenerSettings = Field(
        default_factory=ListenerSettings,
        title="Listener",
        description="The api process: address, TLS, proxies, and the limits that keep slow "
        "or bloated requests from holding it.",
    )
    backlog: BacklogSettings = Field(
        default_factory=BacklogSettings,
        title="Backpressure",
        description="Ingest answers 503 with `Retry-After` while a workspace's backlog is "
        "over either mark.",
    )
    limits: LimitSettings = Field(
        default_factory=LimitSettings,
        title="Limits, stamping and packing",
        description="What a call and a request to Customer.io may hold, and what ingest adds.",
    )
    queue: QueueSettings = Field(
        default_factory=QueueSettings,
        title="Shards and markers",
        description="How the queue is split, how long a request lingers for more, and how "
        "long idempotency markers last.",
    )
    drain: DrainSettings = Field(
        default_factory=DrainSettings,
        title="Drains and workers",
        description="How long a drain may hold a shard and a worker process, and how long "
        "one request to Customer.io may take.",
    )
    retry: RetrySettings = Field(
        default_factory=RetrySettings,
        title="Retries, pauses and dead letters",
        description="What a failed send leads to: backoff, a paused workspace lane, or a "
        "dead letter.",
    )
    app: AppLaneSettings = Field(
        default_factory=AppLaneSettings,
        title="App API lane",
        description="Customer.io's published App API limits are the defaults, spent cluster-wide.",
    )
    console: ConsoleSettings = Field(
        default_factory=ConsoleSettings,
        title="Console",
        description="The operator console under `/console`.",
    )
    metrics: MetricsSettings = Field(
        default_factory=MetricsSettings,
        title="Metrics",
        description="Prometheus metrics of the workers and the queue gauges.",
    )

    def __init__(self, **values: Any) -> None:
        # Typed as flat keywords: ``Settings(shards=4)`` names a setting, not a group.
        super().__init__(**values)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # pydantic-settings would read a group from CIOQ_<GROUP>__<FIELD>; the flat source
        # reads every field of every group from CIOQ_<FIELD>, as before the groups.
        return init_settings, EnvSettingsSource(_flat_settings_class())

    @model_validator(mode="before")
    @classmethod
    def _group_flat_names(cls, data: object) -> object:
        """Moves each flat value (from the environment or ``Settings(shards=4)``) into its
        group; a flat value wins over the same field given inside a group."""
        if not isinstance(data, dict):
            return data
        grouped: dict[str, object] = {}
        flat: dict[str, dict[str, object]] = {}
        for key, value in data.items():
            group = _GROUP_OF.get(key)
            if group is None:
                grouped[key] = value
            else:
                flat.setdefault(group, {})[key] = value
        for group, values in flat.items():
            given = grouped.get(group)
            base = dict(given) if isinstance(given, (dict, BaseModel)) else {}
            if group == "default_workspace" and given is None:
                base = dict(DEV_WORKSPACE)
            grouped[group] = {**base, **values}
        return grouped

    @model_validator(mode="after")
    def _check_lease(self) -> Settings:
        if self.drain.lease_ms < self.min_lease_ms and not self.drain.allow_short_lease:
            # A drain renews once a third of its lease has passed, so a step may start
            # with two thirds left; a lease shorter than that makes lease loss routine.
            # (Lease loss never sends twice: every drain write is fenced; it only costs.)
            raise ValueError(
                f"CIOQ_LEASE_MS={self.drain.lease_ms} is shorter than one send step can take "
                f"(rate wait + connect + read = {self.send_step_max_ms} ms, which must fit "
                f"in two thirds of the lease): set it to at least {self.min_lease_ms}"
            )
        return self

    @property
    def send_step_max_ms(self) -> int:
        """The longest one send can hold a drain: the App rate wait, then one request's
        connect and read timeouts (`service.delivery.upstream`)."""
        timeout_s = self.drain.upstream_timeout_s
        request_s = min(timeout_s, 10.0) + timeout_s
        return self.app.app_token_wait_max_ms + int(request_s * 1000)

    @property
    def min_lease_ms(self) -> int:
        return (3 * self.send_step_max_ms + 1) // 2

    @cached_property
    def workspaces(self) -> tuple[Workspace, ...]:
        """The default workspace first, then those of ``CIOQ_WORKSPACES``."""
        extra = _load_workspaces(self.keys.workspaces_json)
        found = (
            extra if any(w.name == "default" for w in extra) else (self.default_workspace, *extra)
        )
        names = [w.name for w in found]
        if len(names) != len(set(names)):
            raise ConfigError(f"workspace names must be unique, got {names}")
        keys = [entry.key for w in found for entry in ingest_key_entries(w)]
        if len(keys) != len(set(keys)):
            raise ConfigError("an ingest key may belong to one workspace only")
        return found

    def workspace(self, name: str) -> Workspace:
        """The workspace called `name`; ConfigError if there is none."""
        return find_workspace(self.workspaces, name)


def find_workspace(workspaces: tuple[Workspace, ...], name: str) -> Workspace:
    """The workspace called `name`; ConfigError if there is none."""
    for ws in workspaces:
        if ws.name == name:
            return ws
    raise ConfigError(f"unknown workspace {name!r}")


def setting_groups() -> dict[str, type[BaseModel]]:
    """Each group of `Settings` by its attribute name, in the order the docs show them."""
    groups: dict[str, type[BaseModel]] = {}
    for name, field in Settings.model_fields.items():
        if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            raise TypeError(f"Settings.{name} is no group: every setting belongs to one")
        groups[name] = field.annotation
    return groups


def group_fields(group: str) -> dict[str, FieldInfo]:
    """The settings of one group, each read from ``CIOQ_<FIELD>`` (or its aliases)."""
    fields = setting_groups()[group].model_fields
    if group == "default_workspace":
        return {name: fields[name] for name in DEFAULT_WORKSPACE_FIELDS}
    return dict(fields)


def setting_fields() -> dict[str, tuple[str, FieldInfo]]:
    """Every setting by its flat name (``CIOQ_<NAME>``), with the group that holds it."""
    return {
        name: (group, field)
        for group in setting_groups()
        for name, field in group_fields(group).items()
    }


def _groups_by_name() -> dict[str, str]:
    """The group of each name a flat value may come under: field names and their aliases."""
    found: dict[str, str] = {}
    for name, (group, field) in setting_fields().items():
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else ()
        for key in (name, *(c for c in choices if isinstance(c, str))):
            found[key] = group
    return found


_GROUP_OF = _groups_by_name()


@cache
def _flat_settings_class() -> type[BaseSettings]:
    """Every setting as one flat field, for pydantic-settings' environment source only: it
    finds and decodes each variable exactly as it did for the flat settings class."""
    fields: dict[str, Any] = {
        name: (field.annotation, field) for name, (_, field) in setting_fields().items()
    }

    class FlatBase(BaseSettings):
        model_config = Settings.model_config

    flat: type[BaseSettings] = create_model("FlatSettings", __base__=FlatBase, **fields)
    return flat


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
    return tuple(Workspace.model_validate(item) for item in data)


_ADMIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,39}$")


def named_key(entry: SecretStr) -> tuple[str, str]:
    """A configured key as ``(name, key)``: ``name:key``, else named by its fingerprint
    (never by the key itself, which would leak into labels, audits and listings)."""
    name, sep, key = entry.get_secret_value().partition(":")
    if not (sep and key and _ADMIN_NAME.match(name)):
        key = entry.get_secret_value()
        name = "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]
    return name, key


def admin_key_entries(keys: KeySettings) -> tuple[tuple[str, str], ...]:
    """Each admin key as ``(name, key)``: ``name:key`` entries, else a fingerprint name."""
    return tuple(named_key(entry) for entry in keys.admin_keys)


@dataclass(frozen=True, slots=True)
class IngestKey:
    """One ingest key of a workspace: the producer (service) it names, and whether it is bulk."""

    producer: str
    key: str = dataclasses.field(repr=False)
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


def check_keys(settings: Settings) -> None:
    """Refuse admin keys that are also ingest keys, and dev, empty or placeholder secrets in
    production."""
    ingest = {entry.key for ws in settings.workspaces for entry in ingest_key_entries(ws)}
    admin = {key for _, key in admin_key_entries(settings.keys)}
    if ingest & admin:
        raise ConfigError("CIOQ_ADMIN_KEYS must not share a key with any workspace's ingest keys")
    if settings.redis.env != "production":
        return
    problems: list[str] = []
    if not admin or admin & {"", DEV_ADMIN_KEY}:
        problems.append("CIOQ_ADMIN_KEYS is empty or holds the development key")
    for ws in settings.workspaces:
        keys = {entry.key for entry in ingest_key_entries(ws) if not entry.bulk}
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
        "CIOQ_REDIS_URL": settings.redis.redis_url,
        "CIOQ_BROKER_URL": settings.redis.broker_url or "",
        "CIOQ_ADMIN_KEYS": ",".join(k.get_secret_value() for k in settings.keys.admin_keys),
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
