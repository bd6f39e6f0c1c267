"""Shared fixtures: a real Redis (a dedicated db per xdist worker), settings, clean env."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from hypothesis import settings as hypothesis_settings

from sandbox import SandboxConfig, create_sandbox_app
from service.config import Settings
from tests.support import tiers
from tests.support.drain import Clock
from tests.support.http_server import serve_in_thread
from tests.support.processes import RedisServer
from tests.support.sandbox import KEY, OTHER_KEY, OTHER_SITE, SITE
from tests.support.stack import ADMIN_KEY, Stack
from tests.support.triggers import RecordingTriggers

tiers.install()

REDIS_HOST = os.environ.get("CIOQ_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("CIOQ_TEST_REDIS_PORT", "6379"))
# Read at import: the autouse fixture below clears CIOQ_* before any test runs.
# A base per suite lets two suites share one Redis without flushing each other's databases.
REDIS_DB_BASE = int(os.environ.get("CIOQ_TEST_REDIS_DB_BASE", "2"))


# Hypothesis' per-example deadline measures the machine, not the code: the suite runs under
# coverage on cores shared with other work, where a 100 ms example can take 500 ms.
hypothesis_settings.register_profile("cioq", deadline=None)
hypothesis_settings.load_profile("cioq")


def _db_for_worker() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return REDIS_DB_BASE + int(worker.removeprefix("gw") or 0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tiers.mark(items)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Under ``--dist loadgroup``, each ``xdist_group`` test's id must carry its group.

    pytest-xdist marks it on the worker; with pytest 9.2 that mark silently did nothing (a
    module's grouped tests ran on both workers: two Redis Clusters at once, the image venv
    built twice), so a pair of versions that loses the grouping stops the run here.
    """
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [
        item.nodeid
        for item in session.items
        if any(True for _ in item.iter_markers("xdist_group")) and "@" not in item.nodeid
    ]
    if lost:
        raise pytest.UsageError(
            f"pytest-xdist did not group {len(lost)} tests (e.g. {lost[0]}): the locked pytest "
            "and pytest-xdist disagree on node ids"
        )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    tiers.enter(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    result = yield
    tiers.check_clean(item)
    return result


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def make_stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Stack]]:
    """Build real-process stacks (tests/support/stack.py); printed logs if the test failed."""
    stacks: list[Stack] = []

    def build(**settings: Any) -> Stack:
        stack = Stack(tmp_path / f"stack{len(stacks)}", **settings)
        stacks.append(stack)
        return stack

    yield build
    failed = any(
        getattr(getattr(request.node, f"report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )
    for stack in stacks:
        if failed:
            print(stack.logs())
        stack.close()


@pytest.fixture
def stack_with(make_stack: Callable[..., Stack]) -> Callable[..., Stack]:
    """A stack with the api and sweeper running; tests start workers themselves."""

    def build(**settings: Any) -> Stack:
        stack = make_stack(admin_keys=ADMIN_KEY, **settings)
        stack.start_api()
        stack.start_sweeper()
        return stack

    return build


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's CIOQ_* settings."""
    for name in list(os.environ):
        if name.startswith("CIOQ_") or name == "PORT":
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _load_and_chaos_tests_run_unmeasured(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The processes a ``load`` or ``chaos`` test starts run without coverage's tracer.

    They run the code the other tests measure, thousands of times over or once per crash
    point, and the tracer makes them about 1.6x slower: most of the suite's wall time for no
    line it would not see.
    """
    if any(request.node.get_closest_marker(mark) is not None for mark in ("load", "chaos")):
        for name in ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the module's own (no persistence), for tests that change what is
    server-wide: an emptied script cache fails every other test's scripts on the shared
    Redis. A module asks for it by overriding ``redis_url`` with `own_redis_url`."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A flushed Redis database of this worker's own; fails in CI when Redis is missing."""
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{_db_for_worker()}"
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no Redis at {REDIS_HOST}:{REDIS_PORT}: {exc}")
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def triggers() -> RecordingTriggers:
    """Stands in for Celery's broker: the API's trigger calls are recorded, not sent."""
    return RecordingTriggers()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def make_settings(redis_url: str) -> Callable[..., Settings]:
    """Build Settings for a test: real Redis, small shard count, no linger unless asked."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"redis_url": redis_url, "shards": 4, "linger_ms": 0}
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def clock() -> Clock:
    """Real time that a drain test can move forward (`Clock.offset_s`)."""
    return Clock()


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    """A sandbox Customer.io over real HTTP, shared by a module, accepting two sites."""
    config = SandboxConfig(credentials={SITE: KEY, OTHER_SITE: OTHER_KEY})
    with serve_in_thread(create_sandbox_app(config)) as url:
        yield url


@pytest.fixture(scope="module")
def app_sandbox_url() -> Iterator[str]:
    """A sandbox App API over real HTTP, shared by a module; broadcast triggers 60 s apart."""
    with serve_in_thread(create_sandbox_app(SandboxConfig(app_broadcast_interval_s=60))) as url:
        yield url


@pytest.fixture
def app_sandbox(app_sandbox_url: str) -> Iterator[httpx.Client]:
    """A client of the App API sandbox, freshly reset."""
    with httpx.Client(base_url=app_sandbox_url, timeout=5) as c:
        c.post("/_sandbox/reset").raise_for_status()
        yield c


@pytest.fixture
def client(sandbox_url: str) -> Iterator[httpx.Client]:
    """A client authenticated as SITE against a freshly reset sandbox."""
    with httpx.Client(base_url=sandbox_url, auth=(SITE, KEY), timeout=10) as c:
        c.post("/_sandbox/reset").raise_for_status()
        yield c


@pytest.fixture
def sandbox(client: httpx.Client) -> httpx.Client:
    """The freshly reset sandbox, for tests that read what a drain delivered."""
    return client


@pytest.fixture
def other(sandbox_url: str) -> Iterator[httpx.Client]:
    """A client authenticated as OTHER_SITE."""
    with httpx.Client(base_url=sandbox_url, auth=(OTHER_SITE, OTHER_KEY), timeout=10) as c:
        yield c
