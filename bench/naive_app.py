"""The naive design cioq is measured against: one Celery task per event, each calling the
official `customerio` SDK, as a team without cioq would write it.

``celery -A bench.naive_app worker`` with ``BENCH_BROKER_URL``, ``BENCH_TRACK_PORT``,
``BENCH_SITE_ID``, ``BENCH_API_KEY`` and ``REQUESTS_CA_BUNDLE`` (the sandbox's CA) set.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from customerio import CustomerIO

app = Celery("naive", broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:1/0"))
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False, result_backend=None)

_client: dict[int, CustomerIO] = {}


def _cio() -> CustomerIO:
    # One client (and its kept-alive connection pool) per worker process.
    pid = os.getpid()
    if pid not in _client:
        _client[pid] = CustomerIO(
            os.environ["BENCH_SITE_ID"],
            os.environ["BENCH_API_KEY"],
            host="127.0.0.1",
            port=int(os.environ["BENCH_TRACK_PORT"]),
            retries=0,
        )
    return _client[pid]


@app.task(name="naive.track")
def track(person: str, name: str, data: dict[str, Any]) -> None:
    _cio().track(customer_id=person, name=name, data=data)
