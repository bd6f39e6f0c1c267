"""Smoke test of the benchmark harness at its smallest: the load generator against the bare
baseline app, and the baseline drain loop against a counting sandbox, all real processes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import orjson
import pytest
import uvloop

from bench import ingest_floor
from bench.drain import SHARDS, bare_drain, event_op, fill
from bench.figures import Figure
from bench.ingest import _single
from bench.loadgen import run_load
from bench.stack import AUTH_HEADER, BenchStack, rss_bytes, sandbox_stats
from service import keys
from service.jobs import Lane
from tests.support.streams import stream_fields


def test_harness_measures_real_work(tmp_path: Path) -> None:
    stack = BenchStack(tmp_path, shards=SHARDS)
    try:
        port = stack.start_bare_app()
        result = asyncio.run(run_load(port, _single(port), connections=2, duration_s=0.5))
        assert result.requests > 0 and result.errors == 0
        client = stack.redis.client()
        assert client.xlen("bare:q") == result.requests  # every 2xx is a stored entry
        url = stack.start_sandbox(record="count")
        fill(stack, [event_op(i) for i in range(500)], 2_000)
        assert stack.backlog(SHARDS) == 2_000
        bare_drain(client, url)
        assert stack.backlog(SHARDS) == 0
        assert sandbox_stats(url)["ops_accepted"] == 2_000
        assert rss_bytes(stack.procs[0].pid) > 1_000_000
        client.close()
    finally:
        stack.close()


def test_starlette_variant_serves_the_same_ingest(tmp_path: Path) -> None:
    """The Starlette side of the framework bench does the real work: every 2xx is a job in a
    shard's stream, keys are checked, and an identifier with %2F stays one path segment."""
    stack = BenchStack(tmp_path)
    try:
        stack.start_sandbox()
        port = stack.start_starlette_app()
        result = asyncio.run(run_load(port, _single(port), connections=2, duration_s=0.5))
        assert result.requests > 0 and result.errors == 0
        assert stack.backlog(32) == result.requests
        url = f"http://127.0.0.1:{port}/api/v1/customers/a%2Fb"
        assert httpx.put(url, json={}).status_code == 401
        assert httpx.put(url, json={"x": 1}, headers={"authorization": AUTH_HEADER}).is_success
        client = stack.redis.client()
        identifiers = [
            orjson.loads(fields[b"o"])["identifiers"]
            for shard in range(32)
            for fields in stream_fields(
                client, keys.shard_keys("default", shard, Lane.TRACK).stream
            )
        ]
        client.close()
        assert identifiers.count({"id": "a/b"}) == 1
    finally:
        stack.close()


def test_figure_ratio_and_row() -> None:
    faster = Figure("x", 90.0, "ops/s", "base", 100.0, ">= 0.8x", True)
    assert faster.ratio == pytest.approx(0.9)
    fewer = Figure("y", 1.0, "req", "base", 1000.0, ">= 100x fewer", True, invert=True)
    assert fewer.ratio == pytest.approx(1000.0)
    assert fewer.row().count("|") == 8


def test_the_ingest_floors_measure_what_they_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench/ingest_floor.py: the bare app's --no-store floor answers 2xx and stores
    nothing; the in-process figures store every request they count."""
    stack = BenchStack(tmp_path)
    try:
        port = stack.start_bare_app(store=False)
        result = asyncio.run(run_load(port, _single(port), connections=2, duration_s=0.5))
        assert result.requests > 0 and result.errors == 0
        client = stack.redis.client()
        assert client.xlen("bare:q") == 0
        for name in list(os.environ):
            if name.startswith("CIOQ_"):
                monkeypatch.delenv(name)
        for name, value in stack.env.items():
            if name.startswith("CIOQ_"):
                monkeypatch.setenv(name, value)
        assert uvloop.run(ingest_floor.respond_cpu_us(200)) > 0  # raises on any non-200
        assert stack.backlog(32) == 200
        assert uvloop.run(ingest_floor.xadd_cpu_us(stack.redis.url, 300)) > 0
        assert client.xlen("floor:q") == 300
        client.close()
    finally:
        stack.close()
