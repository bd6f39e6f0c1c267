"""The sweeper serves its own ``/metrics`` (the late-failure poller's reads), and sweeps
without it when its port is taken."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from service import keys
from service.jobs import Lane, shard_for
from service.lanes.track.jobs import v2_job
from tests.support.drain import enqueue, person_op
from tests.support.processes import free_port, wait_http, wait_until
from tests.support.stack import Stack

SHARDS = 8


def late_polls(url: str) -> dict[str, float] | None:
    """``cioq_late_polls_total`` by outcome, once the family is exported with a sample."""
    text = httpx.get(url, timeout=5).text
    assert "# TYPE cioq_late_polls_total counter" in text
    assert "# HELP cioq_late_polls_total " in text
    by_outcome = {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "cioq_late_polls"
        for sample in family.samples
        if sample.name == "cioq_late_polls_total" and sample.labels["workspace"] == "default"
    }
    return by_outcome or None


def test_the_sweeper_exports_the_late_pollers_reads(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(sweeper_metrics_port=free_port(), late_poll_interval_s=1, shards=SHARDS)
    _ = stack.sandbox_url  # up before the first poll, one interval after the start
    stack.start_sweeper()
    url = f"http://127.0.0.1:{stack.env['CIOQ_SWEEPER_METRICS_PORT']}/metrics"
    wait_http(url)
    # The first walk reads a page of each failure type from the sandbox's activity log.
    polls = wait_until(lambda: late_polls(url), timeout_s=30, what="a late poll counted")
    assert set(polls) == {"ok"} and polls["ok"] >= 1


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_taken_metrics_port_does_not_stop_the_sweeps(
    make_stack: Callable[..., Stack], taken_port: int
) -> None:
    stack = make_stack(sweeper_metrics_port=taken_port, shards=SHARDS)
    client: redis.Redis = stack.redis.client()
    op = person_op(1)
    enqueue(client, [op], shards=SHARDS)  # stored, and no trigger sent for it
    shard = shard_for("default", v2_job(op).route, SHARDS)
    sweeper = stack.start_sweeper()
    trigger = keys.shard_keys("default", shard, Lane.TRACK).trigger
    wait_until(lambda: client.exists(trigger), timeout_s=30, what="the sweeper's trigger")
    wait_until(lambda: "re-triggered 1 shard(s)" in sweeper.log(), timeout_s=10)
    assert f"sweeper metrics not served on 127.0.0.1:{taken_port}" in sweeper.log()
    assert sweeper.alive()
    client.close()
