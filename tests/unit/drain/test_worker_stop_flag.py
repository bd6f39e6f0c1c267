"""The warm-shutdown flag is this worker run's own: no stale file from a reused pid stops it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers import celery_app


@pytest.fixture(autouse=True)
def _fresh_run() -> Iterator[None]:
    celery_app._new_run()
    yield
    celery_app._drop_stop_flag()


def test_a_flag_left_under_this_pid_does_not_stop_a_new_run() -> None:
    """Flags named by pid alone outlived their workers: a new one with that pid drained nothing."""
    stale = [
        Path(tempfile.gettempdir()) / f"cioq-worker-stopping-{pid}"
        for pid in (os.getpid(), os.getppid())
    ]
    created = [p for p in stale if not p.exists()]
    for path in created:
        path.touch()
    try:
        assert not celery_app._stopping()
    finally:
        for path in created:
            path.unlink()


def test_shutting_down_raises_the_flag_and_shutdown_removes_it() -> None:
    assert not celery_app._stopping()
    celery_app._raise_stop_flag()
    assert celery_app._stopping()
    celery_app._drop_stop_flag()
    assert not celery_app._stopping()
    assert not celery_app.stop_flag().exists()


def test_each_run_has_its_own_flag() -> None:
    first = celery_app.stop_flag()
    celery_app._new_run()
    assert celery_app.stop_flag() != first
