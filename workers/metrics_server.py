"""The worker pod's metrics endpoint, served by the Celery main process.

Prefork children write their metric values to files in the multiprocess directory;
this endpoint adds them up, so one scrape of one port covers the whole pod. A child
that exits has its live gauges dropped; its counters stay in the totals.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

from celery.signals import worker_process_shutdown
from prometheus_client import start_http_server

from service.config import MetricsSettings
from service.metrics.export import mark_process_dead, process_registry

log = logging.getLogger("cioq.worker")


def multiprocess_dir(main_pid: int) -> Path:
    """Where this worker's processes keep their metric files (one per worker, wiped at start)."""
    return Path(tempfile.gettempdir()) / f"cioq-metrics-{main_pid}"


def serve_metrics(metrics: MetricsSettings) -> WSGIServer | None:
    """Serve ``/metrics`` on the worker metrics port; a busy port is logged, not fatal.

    A worker that drains without metrics is better than one that does not drain; the
    "no worker up" alert notices the missing scrape target.
    """
    host, port = metrics.worker_metrics_host, metrics.worker_metrics_port
    try:
        server, _ = start_http_server(port, addr=host, registry=process_registry())
    except OSError as exc:
        log.error("worker metrics not served on %s:%d: %s", host, port, exc)
        return None
    log.info("worker metrics on http://%s:%d/metrics", host, port)
    return server


@worker_process_shutdown.connect
def _child_exit(pid: int | None = None, **_: Any) -> None:
    mark_process_dead(pid or os.getpid())
