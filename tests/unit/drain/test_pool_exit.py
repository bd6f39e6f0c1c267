"""A prefork child told to stop does not sit out billiard's 30 s wait for its results to
be read (`workers.celery_app`): a SIGTERMed worker exits within its grace period."""

from __future__ import annotations

import time
from typing import Any

import billiard.pool
from billiard import Value

import workers.celery_app  # noqa: F401  (sets the bound)


def test_a_child_whose_results_were_not_credited_exits_within_seconds() -> None:
    # The state the SIGTERM test found both children in: nothing credited, one task done.
    child: Any = billiard.pool.Worker.__new__(billiard.pool.Worker)
    child.on_ready_counter = Value("i", 0)
    started_s = time.monotonic()
    assert child._ensure_messages_consumed(completed=1) is False
    assert time.monotonic() - started_s < 5  # billiard's own default: 30 s
