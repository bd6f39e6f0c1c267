"""How metrics leave a process: the api's ``/metrics`` and the worker's multiprocess setup.

The api serves ``GET /metrics`` unauthenticated, like ``/healthz``: it carries counts and
workspace names, never payloads, keys or person ids, and Prometheus must reach it. Keep
the api port off the public internet or filter ``/metrics`` at the ingress (the
Kubernetes manifests expose it only inside the cluster).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    values,
)
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from service.config import MetricsSettings, QueueSettings, RedisSettings, Workspace
from service.metrics.late_failures import LateFailuresCollector
from service.metrics.queue_state import QueueStateCollector
from service.store.connections import connect_metrics

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"


def use_multiprocess(path: Path) -> None:
    """Switch this process, and the children it forks, to file-backed metric values.

    Call it before the first labelled metric is touched. It also works when
    prometheus_client was already imported: metric values pick their class when a
    label set is first used, so resetting the class here is enough.
    """
    shutil.rmtree(path, ignore_errors=True)  # values of a previous run would be added up
    path.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_DIR] = str(path)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def mark_process_dead(pid: int) -> None:
    """Drop a finished child's live gauges (its counters keep counting in the total)."""
    path = os.environ.get(ENV_DIR)
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


class _Delegate(Collector):
    """Another registry's metrics inside this one, without re-registering them."""

    def __init__(self, source: Collector) -> None:
        self.source = source

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self.source.collect()


def process_registry(*extra: Collector) -> CollectorRegistry:
    """This process's metrics (every child's, in multiprocess mode) plus `extra` collectors."""
    registry = CollectorRegistry(auto_describe=False)
    path = os.environ.get(ENV_DIR)
    if path:
        MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Delegate(REGISTRY))
    for collector in extra:
        registry.register(collector)
    return registry


async def metrics_asgi(registry: CollectorRegistry, send: Any) -> None:
    """Answer one ASGI request with the registry's text exposition.

    Rendering runs in a thread: collectors read Redis synchronously, and a slow Redis
    must not stall the event loop that serves ingest.
    """
    body = await asyncio.to_thread(generate_latest, registry)
    headers = [
        (b"content-type", CONTENT_TYPE_LATEST.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ApiMetrics:
    """The api's ``/metrics``: its own counters plus the queue state read from Redis."""

    def __init__(
        self,
        redis: RedisSettings,
        queue: QueueSettings,
        metrics: MetricsSettings,
        workspaces: tuple[Workspace, ...],
    ) -> None:
        self.redis = connect_metrics(redis)
        self.registry = process_registry(
            QueueStateCollector(queue, metrics, workspaces, self.redis),
            LateFailuresCollector(workspaces, self.redis),
        )

    async def serve(self, send: Any) -> None:
        await metrics_asgi(self.registry, send)

    def close(self) -> None:
        self.redis.close()
