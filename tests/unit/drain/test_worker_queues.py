"""`cioq worker --queues`: one pool consumes both trigger queues, live first; split pools
consume one each."""

from __future__ import annotations

import pytest

from service.triggers import BULK_QUEUE, DRAIN_QUEUE, WorkerQueues
from workers.celery_app import worker_argv


@pytest.mark.parametrize(
    ("queues", "consumed"),
    [
        (WorkerQueues.ALL, f"--queues={DRAIN_QUEUE},{BULK_QUEUE}"),  # live named first
        (WorkerQueues.LIVE, f"--queues={DRAIN_QUEUE}"),
        (WorkerQueues.BULK, f"--queues={BULK_QUEUE}"),
    ],
)
def test_a_worker_consumes_the_queues_it_is_given(queues: WorkerQueues, consumed: str) -> None:
    argv = worker_argv(concurrency=2, pool="prefork", loglevel="info", queues=queues)
    assert [arg for arg in argv if arg.startswith("--queues=")] == [consumed]


def test_by_default_a_worker_consumes_both_live_first() -> None:
    argv = worker_argv(concurrency=2, pool="prefork", loglevel="info")
    assert f"--queues={DRAIN_QUEUE},{BULK_QUEUE}" in argv
