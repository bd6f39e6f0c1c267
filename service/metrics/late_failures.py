"""``cioq_late_failures_total``: late failures recorded, by workspace, lane, producer and type.

The poller counts each record in Redis (`keys.late_counts`, in the script that records it),
so the counter equals what the stream, the CLI, the admin API and the console show, whichever
sweeper found it, and outlives the capped stream. The api's ``/metrics`` reads the counts at
scrape time, like the queue state. Labels stay bounded: lanes and failure types come from
fixed tables, producers from configuration (a record's job keeps its ingest key's name; one
with no linked job counts as ``unlinked``), and past `MAX_PRODUCERS` names fold into ``other``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from service import keys
from service.config import Workspace
from service.store.connections import STORE_ERRORS, SyncStore

log = logging.getLogger("cioq.metrics")

#: Producer labels one workspace exports before folding the rest into "other".
MAX_PRODUCERS = 100


def late_failure_counts(
    client: SyncStore, workspaces: tuple[Workspace, ...]
) -> dict[tuple[str, str, str, str], int]:
    """Every late failure recorded, ever: (workspace, lane, producer, type) → count."""
    pipe = client.pipeline(transaction=False)
    for ws in workspaces:
        pipe.hgetall(keys.late_counts(ws.name))
    out: dict[tuple[str, str, str, str], int] = {}
    for ws, raw in zip(workspaces, pipe.execute(), strict=True):
        producers: set[str] = set()
        for field, value in sorted(raw.items()):
            lane, producer, activity_type = field.decode().split("|", 2)
            if producer not in producers and len(producers) >= MAX_PRODUCERS:
                producer = "other"
            producers.add(producer)
            key = (ws.name, lane, producer, activity_type)
            out[key] = out.get(key, 0) + int(value)
    return out


class LateFailuresCollector(Collector):
    """Reads the late-failure counts of every workspace on each scrape."""

    def __init__(self, workspaces: tuple[Workspace, ...], client: SyncStore) -> None:
        self.workspaces = workspaces
        self.redis = client

    def describe(self) -> list[Metric]:
        return []  # registering must not read Redis

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "cioq_late_failures",
            "Calls Customer.io accepted (2xx) and failed afterwards, found in the workspace's "
            "activity log, by lane, producer and activity type (lane and producer unlinked "
            "when cioq cannot tie the failure to a job it sent).",
            labels=["workspace", "lane", "producer", "type"],
        )
        try:
            counts = late_failure_counts(self.redis, self.workspaces)
        except STORE_ERRORS as exc:
            log.warning("late failure counts unavailable for /metrics: %s", exc)
            return
        for labels, count in sorted(counts.items()):
            family.add_metric(list(labels), count)
        yield family
