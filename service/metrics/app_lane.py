"""The App API lane's own metrics: sends by limit class and verdict, waits for a rate
slot, ambiguous outcomes (each one a message an operator must check)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from service.metrics.definitions import NAMESPACE

APP_SENDS = Counter(
    "app_sends",
    "App API sends and broadcast triggers by limit class and verdict (delivered, resend, "
    "throttled, setup, refused, ambiguous).",
    ["workspace", "limit_class", "verdict"],
    namespace=NAMESPACE,
)
APP_RATE_WAIT = Histogram(
    "app_rate_wait_seconds",
    "Time an App API request waited for its slot of the cluster-wide rate limit.",
    ["workspace", "limit_class"],
    namespace=NAMESPACE,
    buckets=(0.0, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
APP_RATE_DEFERRED = Counter(
    "app_rate_deferred",
    "App API requests handed back because no rate slot was free soon enough (throttled waits).",
    ["workspace", "limit_class"],
    namespace=NAMESPACE,
)
APP_AMBIGUOUS = Counter(
    "app_ambiguous",
    "App API sends whose outcome is unknown (dead-lettered as ambiguous unless confirmed).",
    ["workspace", "resolution"],
    namespace=NAMESPACE,
)

APP_INLINE = Counter(
    "app_inline_sends",
    "App jobs the api sent itself (sent) or left to a worker, and why: the shard was held "
    "(busy), waited out a retry (retry), held an older job first (behind), had a cut-off "
    "send of the job (cut_off), the lane was paused (paused), no rate slot came soon enough "
    "(no_slot), Redis failed (store_error), the note was not confirmed at the durability "
    "level (unconfirmed), or too many sends were under way (full).",
    ["workspace", "outcome"],
    namespace=NAMESPACE,
)


def inline(workspace: str, outcome: str) -> None:
    APP_INLINE.labels(workspace, outcome).inc()


def send(workspace: str, limit_class: str, verdict: str) -> None:
    APP_SENDS.labels(workspace, limit_class, verdict).inc()


def rate_wait(workspace: str, limit_class: str, wait_s: float) -> None:
    APP_RATE_WAIT.labels(workspace, limit_class).observe(wait_s)


def rate_deferred(workspace: str, limit_class: str) -> None:
    APP_RATE_DEFERRED.labels(workspace, limit_class).inc()


def ambiguous(workspace: str, resolution: str) -> None:
    """`resolution`: ``dead_lettered``, ``confirmed`` (the message lookup found it) or
    ``resent`` (the workspace opted in to resending)."""
    APP_AMBIGUOUS.labels(workspace, resolution).inc()


LATE_POLLS = Counter(
    "late_polls",
    "Reads of the App API activity log by the poller of late failures, by outcome (ok, "
    "throttled: 429 with Retry-After, quota: 429 without, failed).",
    ["workspace", "outcome"],
    namespace=NAMESPACE,
)


def late_poll(workspace: str, outcome: str) -> None:
    LATE_POLLS.labels(workspace, outcome).inc()
