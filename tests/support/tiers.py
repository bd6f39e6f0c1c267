"""Tests in tiers by folder: the folder is the mark, and each tier's limits are enforced.

- ``tests/unit/``: no Redis, no processes (in-thread HTTP servers are fine);
- ``tests/integration/``: a real Redis, in process; no processes;
- ``tests/e2e/``: real processes (redis-server, api, workers, browsers, npm clients).

A module outside the three folders is a collection error, so no module can forget its mark.
A unit or integration test that starts a process (or a unit test that opens a Redis
connection) fails, naming what it started: the guard is set before any fixture of the test
runs, module-scoped fixtures included.
"""

from __future__ import annotations

import multiprocessing.process
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio.connection
import redis.connection

TESTS = Path(__file__).resolve().parents[1]
TIERS = ("unit", "integration", "e2e")


def tier_of(path: Path) -> str | None:
    parts = path.resolve().relative_to(TESTS).parts
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


class Guard:
    """Which tier the running test is in, and what it started that its tier forbids."""

    def __init__(self) -> None:
        self.tier: str | None = None
        self.refused: list[str] = []

    def check(self, what: str, forbidden_in: tuple[str, ...]) -> None:
        if self.tier in forbidden_in:
            self.refused.append(what)
            raise TierViolation(
                f"a {self.tier} test must not use {what}: move it under tests/e2e/"
                if what != "Redis"
                else "a unit test must not use Redis: move it under tests/integration/"
            )


class TierViolation(RuntimeError):
    pass


GUARD = Guard()
NO_PROCESSES = ("unit", "integration")


def _wrap(original: Callable[..., Any], what: str, forbidden: tuple[str, ...]) -> Any:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        GUARD.check(what, forbidden)
        return original(*args, **kwargs)

    return guarded


def _wrap_async(original: Callable[..., Any], what: str, forbidden: tuple[str, ...]) -> Any:
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        GUARD.check(what, forbidden)
        return await original(*args, **kwargs)

    return guarded


def install() -> None:
    """Wrap the ways a test starts a process or reaches Redis (once per test process)."""
    popen: Any = subprocess.Popen
    popen._execute_child = _wrap(popen._execute_child, "a subprocess", NO_PROCESSES)
    process: Any = multiprocessing.process.BaseProcess
    process.start = _wrap(process.start, "multiprocessing", NO_PROCESSES)
    os.fork = _wrap(os.fork, "os.fork", NO_PROCESSES)
    sync_conn: Any = redis.connection.AbstractConnection
    sync_conn.connect = _wrap(sync_conn.connect, "Redis", ("unit",))
    async_conn: Any = redis.asyncio.connection.AbstractConnection
    async_conn.connect = _wrap_async(async_conn.connect, "Redis", ("unit",))


def mark(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item.path)
        if tier is None:
            raise pytest.UsageError(
                f"{item.path}: every test module lives under tests/unit, tests/integration "
                "or tests/e2e (tests/support/tiers.py)"
            )
        item.add_marker(getattr(pytest.mark, tier))
    # The slowest tier first: xdist hands out ungrouped tests in collection order, so with e2e
    # last one worker finished a minute-long test while the other idled; with the unit tests
    # last, they fill the gap. Stable, so each module's tests stay together.
    items.sort(key=lambda item: TIERS[::-1].index(tier_of(item.path) or "e2e"))


def enter(item: pytest.Item) -> None:
    """The guard applies the tier of the test about to be set up."""
    GUARD.tier = tier_of(item.path)
    GUARD.refused = []


def check_clean(item: pytest.Item) -> None:
    """Fail a test that broke its tier's rule even where the code under test swallowed the
    error the guard raised."""
    if GUARD.refused:
        pytest.fail(f"{item.nodeid} used {sorted(set(GUARD.refused))} (tests/support/tiers.py)")
