"""The groups every process reads to reach the queue: Redis (`RedisSettings`) and the queue's
shape (`QueueSettings`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
        "(a restart, a failover of one Redis, a cluster primary restarted or replaced by its "
        "replica: the slot map is re-read between tries), counted from the outage's first "
        "failed connect, before it answers 503 with `Retry-After` (then at once, until Redis "
        "is back): only commands that provably did not run are sent again, never one that "
        "may have. 0 answers 503 at once. Keep it under the producers' HTTP timeout.",
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
    trigger_wait_ms: int = Field(
        default=250,
        ge=1,
        description="How long an ingest request waits for its drain triggers to reach the "
        "broker before it is answered anyway (its jobs are stored by then). A trigger still "
        "unsent is left to finish on its own, and until it has, later requests send none: the "
        "sweeper triggers their shards once the broker answers. So a broker that hangs slows "
        "no answer past this wait, and no producer times out and sends a stored call again.",
    )
    idempotency_window_s: float = Field(
        default=86_400.0,
        gt=0,
        description="How long an `Idempotency-Key`'s first answer, and its per-shard request "
        "markers, are kept; also how long a dead-letter replay's marker guards against a "
        "second replay.",
    )
    forget_tombstone_ttl_s: int = Field(
        default=2_678_400,
        ge=60,
        description="How long a forgotten person's tombstone (a digest per identifier) makes "
        "dead-letter replays drop their letters and, in a workspace's suppress mode, ingest "
        "refuse their calls. Default 31 days: the default dead-letter retention (30 days) "
        "and a day for a letter that died while the forget ran; keep it at least "
        "`CIOQ_DEAD_LETTER_MAX_AGE_S`.",
    )

    @property
    def trigger_ttl_ms(self) -> int:
        """How long a shard's trigger marker debounces further triggers.

        It outlives the linger wait, so a burst of writes to one shard sends one trigger.
        """
        return max(2 * self.linger_ms, 1000)
