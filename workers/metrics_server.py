"""The `/metrics` endpoints of the processes without an HTTP port: a worker and the sweeper.

A worker's is served by the Celery main process: prefork children write their metric values
to files in the multiprocess directory, and the endpoint adds them up, so one scrape of one
port covers the whole pod. A child that exits has its live gauges dropped; its counters stay
in the totals. The sweeper is one process, so it serves its own registry.
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

from service.metrics.export import mark_process_dead, process_registry
from workers.liveness import Role


def multiprocess_dir(main_pid: int) -> Path:
    """Where this worker's processes keep their metric files (one per worker, wiped at start)."""
    return Path(tempfile.gettempdir()) / f"cioq-metrics-{main_pid}"


def serve_metrics(role: Role, host: str, port: int) -> WSGIServer | None:
    """Serve ``/metrics`` of this process (and its prefork children) on `host`:`port`; a
    busy port is logged, not fatal.

    A worker that drains without metrics is better than one that does not drain (the "no
    worker up" alert notices its missing scrape target), and so is a sweeper that sweeps.
    """
    log = logging.getLogger(f"cioq.{role}")
    try:
        server, _ = start_http_server(port, addr=host, registry=process_registry())
    except OSError as exc:
        log.error("%s metrics not served on %s:%d: %s", role, host, port, exc)
        return None
    log.info("%s metrics on http://%s:%d/metrics", role, host, port)
    return server


@worker_process_shutdown.connect
def _child_exit(pid: int | None = None, **_: Any) -> None:
    mark_process_dead(pid or os.getpid())
