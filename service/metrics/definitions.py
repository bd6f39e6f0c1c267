"""Every Prometheus metric cioq's own code records, and the helpers that record them.

Labels stay bounded: workspace names come from configuration, op types and routes from
fixed tables, status classes from `Outcome.status_class`, and dead-letter reasons are
folded into a short list (see `_reason_label`). No person id ever becomes a label.

Processes that fork (the Celery prefork pool) switch to multiprocess mode before any
metric is used (``cioq worker`` does it), so each child writes its values to files
that the main process's metrics endpoint adds up. The gauges that
need Redis reads are not here: `service.metrics.queue_state` computes them at scrape time,
and `service.metrics.export` serves both. Accepted, delivered and dead-lettered jobs and
upstream answers also go to `service.metrics.activity`: the per-minute numbers of the
operator's overview.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache

from prometheus_client import Counter, Gauge, Histogram

from service.delivery.outcomes import Outcome
from service.jobs import UNKNOWN_PRODUCER, Job, Lane, job_kind
from service.metrics.activity import TALLY, activity_name, producer_activity
from service.metrics.histograms import observe_many
from service.store import events
from service.store.shards import PauseCause

NAMESPACE = "cioq"

#: Batch sizes up to the 500,000-byte request limit, dense near the top where fill matters.
BATCH_BYTES_BUCKETS = (
    1_000,
    10_000,
    50_000,
    100_000,
    200_000,
    300_000,
    400_000,
    450_000,
    480_000,
    500_000,
)
BATCH_OPS_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 4000)
REQUEST_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
UPSTREAM_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Accept → upstream 2xx spans the linger wait at best and retry back-offs at worst.
DELIVERY_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)

INGEST_REQUESTS = Counter(
    "ingest_requests",
    "Ingest API requests by route name and HTTP status.",
    ["route", "status"],
    namespace=NAMESPACE,
)
INGEST_DURATION = Histogram(
    "ingest_request_duration_seconds",
    "Ingest API request latency, body read to response, by route name.",
    ["route"],
    namespace=NAMESPACE,
    buckets=REQUEST_SECONDS_BUCKETS,
)
JOBS_ACCEPTED = Counter(
    "jobs_accepted",
    "Jobs stored durably by ingest, by workspace, lane, operation type and producer.",
    ["workspace", "lane", "op_type", "producer"],
    namespace=NAMESPACE,
)
UPSTREAM_REQUESTS = Counter(
    "upstream_requests",
    "Requests sent to Customer.io by request kind and answer class (2xx..5xx, timeout, ...).",
    ["workspace", "lane", "kind", "status_class"],
    namespace=NAMESPACE,
)
UPSTREAM_DURATION = Histogram(
    "upstream_request_duration_seconds",
    "Customer.io request latency, transport failures included.",
    ["workspace", "lane", "kind"],
    namespace=NAMESPACE,
    buckets=UPSTREAM_SECONDS_BUCKETS,
)
BATCH_BYTES = Histogram(
    "batch_bytes",
    "Body size of each batch sent (Track v2, Pipelines /v1/batch), envelope included; "
    "_count = batches.",
    ["workspace", "lane"],
    namespace=NAMESPACE,
    buckets=BATCH_BYTES_BUCKETS,
)
BATCH_OPS = Histogram(
    "batch_ops",
    "Operations (Track) or calls (Pipelines) in each batch sent.",
    ["workspace", "lane"],
    namespace=NAMESPACE,
    buckets=BATCH_OPS_BUCKETS,
)
DELIVERED_OPS = Counter(
    "delivered_ops",
    "Jobs Customer.io accepted (2xx), by workspace, lane and producer.",
    ["workspace", "lane", "producer"],
    namespace=NAMESPACE,
)
DELIVERY_LATENCY = Histogram(
    "delivery_latency_seconds",
    "End-to-end latency of delivered jobs: ingest accept to Customer.io 2xx.",
    ["workspace"],
    namespace=NAMESPACE,
    buckets=DELIVERY_SECONDS_BUCKETS,
)
RETRIES_SCHEDULED = Counter(
    "retries_scheduled",
    "Shard back-offs scheduled after a transient failure, by the failure's status class.",
    ["workspace", "status_class"],
    namespace=NAMESPACE,
)
BISECT_REQUESTS = Counter(
    "bisect_requests",
    "Extra requests spent splitting rejected batches to isolate the bad operations.",
    ["workspace"],
    namespace=NAMESPACE,
)
DEAD_LETTERS = Counter(
    "dead_letters",
    "Jobs moved to the dead-letter stream, by reason and producer.",
    ["workspace", "reason", "producer"],
    namespace=NAMESPACE,
)
DEAD_LETTERS_HANDLED = Counter(
    "dead_letters_handled",
    "Dead letters an operator replayed into the queue, repaired and replayed, or purged "
    "(cioq dlq, admin API, console).",
    ["workspace", "action"],
    namespace=NAMESPACE,
)
PAUSES = Counter(
    "pauses",
    "Pauses of a workspace's lane started by a worker, by cause (throttle, setup).",
    ["workspace", "lane", "cause"],
    namespace=NAMESPACE,
)
OPS_COALESCED = Counter(
    "ops_coalesced",
    "Operations saved by coalescing: jobs delivered inside another job's op.",
    ["workspace"],
    namespace=NAMESPACE,
)
DRAINS = Counter(
    "drains",
    "Drain tasks run, by lane and why each one stopped (empty, linger, backoff, busy, ...).",
    ["workspace", "lane", "stopped"],
    namespace=NAMESPACE,
)


@cache
def _process_drains() -> Gauge:
    # Made on first use, not at import: an unlabelled metric picks its value class when
    # created, and `cioq worker` may switch to multiprocess mode after this import.
    # One series per live process (pid label), so a scrape shows every prefork child.
    return Gauge(
        "worker_process_drains",
        "Drain tasks run by this worker process since it started.",
        namespace=NAMESPACE,
        multiprocess_mode="liveall",
    )


#: Reasons cioq itself gives; Customer.io's per-item reasons pass if they look like one.
_OWN_REASONS = frozenset(
    {"invalid", "op_too_large", "max_attempts", "max_age", "crash_loop", "replay_failed"}
)
# fullmatch, not match with `$`: `$` also matches before a final newline ("x\n").
_REASON_SHAPE = re.compile(r"[a-z][a-z0-9_]{0,31}")
#: Upstream reason labels one process admits before folding the rest into "other".
MAX_UPSTREAM_REASONS = 20
_seen_reasons: set[str] = set()


#: Producer labels one process admits before folding the rest into "other": names come
#: from configuration only, so this bounds what a long-lived worker sees across renames.
MAX_PRODUCERS = 100
_seen_producers: set[str] = set()


def producer_label(producer: str) -> str:
    if producer in _seen_producers:
        return producer
    if not producer:
        return UNKNOWN_PRODUCER
    if len(_seen_producers) < MAX_PRODUCERS:
        _seen_producers.add(producer)
        return producer
    return "other"


def _reason_label(reason: str) -> str:
    if reason in _OWN_REASONS or reason in _seen_reasons:
        return reason
    if _REASON_SHAPE.fullmatch(reason) and len(_seen_reasons) < MAX_UPSTREAM_REASONS:
        _seen_reasons.add(reason)
        return reason
    return "other"


# Every ingest request looks its metrics' children up: prometheus_client's `labels()`
# (label checks, str conversions, a lock) cost more than the increments. The label values
# are bounded (routes x statuses, workspaces x lanes x op types), as the children are.
@cache
def _ingest_children(route: str, status: int) -> tuple[Counter, Histogram]:
    return INGEST_REQUESTS.labels(route, str(status)), INGEST_DURATION.labels(route)


@cache
def _accepted(workspace: str, lane: Lane, op_type: str, producer: str) -> Counter:
    return JOBS_ACCEPTED.labels(workspace, lane, op_type, producer_label(producer))


@cache
def _accepted_activity(lane: Lane) -> str:
    return activity_name(lane, "accepted")


@cache
def _producer_activity(producer: str, name: str) -> str:
    return producer_activity(producer_label(producer), name)


def observe_ingest(route: str, status: int, duration_s: float) -> None:
    requests, duration = _ingest_children(route, status)
    requests.inc()
    duration.observe(duration_s)


def jobs_accepted(workspace: str, jobs: Sequence[Job], producer: str = "") -> None:
    if len(jobs) == 1:  # most requests: no counting by lane and op type to do
        job = jobs[0]
        lane = job.lane
        _accepted(workspace, lane, job.op_type, producer).inc()
        accepted = _producer_activity(producer, "accepted")
        TALLY.add_pair(workspace, _accepted_activity(lane), accepted)
        return
    counts: dict[tuple[Lane, str], int] = {}
    for job in jobs:
        key = (job.lane, job.op_type)
        counts[key] = counts.get(key, 0) + 1
    per_lane: dict[Lane, int] = {}
    for (lane, op_type), count in counts.items():
        _accepted(workspace, lane, op_type, producer).inc(count)
        per_lane[lane] = per_lane.get(lane, 0) + count
    for lane, count in per_lane.items():
        TALLY.add(workspace, _accepted_activity(lane), count)
    TALLY.add(workspace, _producer_activity(producer, "accepted"), len(jobs))


def upstream_request(
    workspace: str,
    kind: str,
    outcome: Outcome,
    duration_s: float,
    *,
    body_bytes: int,
    ops: int,
    lane: Lane | None = None,
) -> None:
    """One request to Customer.io; batches (v2, cdp) also feed the size histograms.

    `lane` is the drain's (App jobs of kind ``app`` drain in two lanes); the Prometheus
    label stays the kind's lane, so broadcasts count under ``app`` there.
    """
    job = job_kind(kind)
    label = job.lane
    UPSTREAM_REQUESTS.labels(workspace, label, kind, outcome.status_class).inc()
    status = str(outcome.status) if outcome.status is not None else outcome.status_class
    TALLY.add(workspace, activity_name(lane or label, f"status:{status}"))
    UPSTREAM_DURATION.labels(workspace, label, kind).observe(duration_s)
    if job.batches:  # v1 and App API requests are one job each, not batches
        BATCH_BYTES.labels(workspace, label).observe(body_bytes)
        BATCH_OPS.labels(workspace, label).observe(ops)


def delivered(workspace: str, jobs: Iterable[tuple[int, str]], now_ms: int, lane: Lane) -> None:
    """Jobs Customer.io accepted, as (ingest time in ms, producer) pairs."""
    per_producer: dict[str, int] = {}
    latencies_s: list[float] = []
    for at_ms, producer in jobs:
        latencies_s.append(max(now_ms - at_ms, 0) / 1000)
        per_producer[producer] = per_producer.get(producer, 0) + 1
    observe_many(DELIVERY_LATENCY.labels(workspace), latencies_s)
    for producer, count in per_producer.items():
        DELIVERED_OPS.labels(workspace, lane, producer_label(producer)).inc(count)
        TALLY.add(workspace, _producer_activity(producer, "delivered"), count)
    TALLY.add(workspace, activity_name(lane, "delivered"), sum(per_producer.values()))


def retry_scheduled(workspace: str, status_class: str) -> None:
    RETRIES_SCHEDULED.labels(workspace, status_class).inc()


def bisect_request(workspace: str) -> None:
    BISECT_REQUESTS.labels(workspace).inc()


def dead_lettered(workspace: str, letters: Iterable[tuple[str, Lane, str]]) -> None:
    """Jobs dead-lettered, as (reason, lane, producer) triples."""
    for reason, lane, producer in letters:
        DEAD_LETTERS.labels(workspace, _reason_label(reason), producer_label(producer)).inc()
        TALLY.add(workspace, activity_name(lane, "dead_lettered"))
        TALLY.add(workspace, _producer_activity(producer, "dead_lettered"))


def dead_letters_handled(workspace: str, action: str, count: int) -> None:
    if count:
        DEAD_LETTERS_HANDLED.labels(workspace, action).inc(count)


def paused(workspace: str, cause: PauseCause, lane: Lane) -> None:
    """A worker paused `workspace`'s `lane`."""
    PAUSES.labels(workspace, lane, cause).inc()


def ops_coalesced(workspace: str, count: int) -> None:
    if count > 0:
        OPS_COALESCED.labels(workspace).inc(count)


def drain_finished(workspace: str, stopped: str | None, lane: Lane) -> None:
    DRAINS.labels(workspace, lane, stopped or "none").inc()
    _process_drains().inc()


class _StoreCounts:
    """Counts what the store reports (`service.store.events`)."""

    jobs_accepted = staticmethod(jobs_accepted)
    dead_lettered = staticmethod(dead_lettered)
    dead_letters_handled = staticmethod(dead_letters_handled)


events.listen(_StoreCounts())
