"""The groups read on the way to Customer.io: the drain, its retries, the App lane's limits
and the workers' metrics.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
    dead_letter_max_age_s: int = Field(
        default=2_592_000,
        ge=0,
        description="Dead letters older than this (from when they died) are removed by the "
        "sweeper and counted in `cioq_dead_letters_expired_total`; 0 keeps them until an "
        "operator replays or purges them. Default 30 days.",
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
        default=0.97,
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
    app_inline_sends: bool = Field(
        default=True,
        description="The api sends an App send or trigger itself, once stored, when a drain "
        "would send exactly that job now (its shard free, no retry wait, no pause, a rate "
        "slot): no worker hop. Only on a standalone Redis; on a cluster, or `false`, workers "
        "send every App job.",
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
    late_link_window_s: float = Field(
        default=900.0,
        ge=0,
        description="How long a delivered Track or Pipelines identify or event stays in the "
        "index that ties a late failure to it (by person, and by event id), for workspaces "
        "with an App API key: about 1 KB of Redis per job (docs/late-failures.md); 0 keeps no "
        "index (every late failure is then recorded unlinked).",
    )
    late_link_per_person: int = Field(
        default=50,
        ge=1,
        description="Delivered jobs the late-failure index keeps per person identifier, "
        "newest first, within `CIOQ_LATE_LINK_WINDOW_S`.",
    )


class MetricsSettings(BaseModel):
    """Read by the workers' and the sweeper's `/metrics` servers and the queue gauges."""

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
    sweeper_metrics_host: str = Field(
        default="127.0.0.1",
        description="Bind address of the sweeper's `/metrics` server.",
    )
    sweeper_metrics_port: int = Field(
        default=9101,
        ge=1,
        le=65535,
        description="Port of the sweeper's `/metrics` server (the poller of late failures "
        "counts its reads there); not the worker's, so both run on one host.",
    )
    drain_rate_window_s: int = Field(
        default=60,
        ge=1,
        description="Window of the drain rate behind `cioq_backlog_seconds`, the scaling signal.",
    )
