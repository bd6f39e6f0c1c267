"""Two workspaces in one run: each producer's jobs reach only its own upstream, with its
own credentials.

Each workspace has its own sandbox Customer.io that accepts only that workspace's site
id and API key, so a job sent to the wrong place, or with the wrong credentials, would
be refused there (and show up in its request log) instead of being recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from sandbox import SandboxConfig, create_sandbox_app
from service.api.app import create_app
from service.config import load_settings
from service.jobs import Lane
from tests.support.drain import build_drainer
from tests.support.http_server import serve_in_thread
from tests.support.triggers import RecordingTriggers

SITES = {"a": ("site-a", "api-key-a", "ingest-a"), "b": ("site-b", "api-key-b", "ingest-b")}


@pytest.fixture
def upstreams() -> Iterator[dict[str, str]]:
    """One sandbox per workspace, each accepting only that workspace's credentials."""
    (site_a, key_a, _), (site_b, key_b, _) = SITES["a"], SITES["b"]
    with (
        serve_in_thread(create_sandbox_app(SandboxConfig(credentials={site_a: key_a}))) as a,
        serve_in_thread(create_sandbox_app(SandboxConfig(credentials={site_b: key_b}))) as b,
    ):
        yield {"a": a, "b": b}


def _workspaces_json(upstreams: dict[str, str]) -> bytes:
    return orjson.dumps(
        [
            {
                "name": name,
                "site_id": site,
                "api_key": api_key,
                "track_url": upstreams[name],
                "ingest_keys": ingest,
            }
            for name, (site, api_key, ingest) in SITES.items()
        ]
    )


def _records(url: str, path: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{url}{path}", params={"limit": 1000}).json()["records"])


@pytest.mark.parametrize("form", ["json", "file"])
def test_each_producer_reaches_only_its_own_workspace(
    form: str,
    upstreams: dict[str, str],
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CIOQ_WORKSPACES inline or as @file: keys pick the workspace, drains use its creds."""
    raw = _workspaces_json(upstreams)
    if form == "file":
        path = tmp_path / "workspaces.json"
        path.write_bytes(raw)
        monkeypatch.setenv("CIOQ_WORKSPACES", f"@{path}")
    else:
        monkeypatch.setenv("CIOQ_WORKSPACES", raw.decode())
    monkeypatch.setenv("CIOQ_REDIS_URL", redis_url)
    monkeypatch.setenv("CIOQ_SHARDS", "4")
    monkeypatch.setenv("CIOQ_LINGER_MS", "0")
    # The default workspace gets an upstream that accepts nobody: nothing may go there.
    monkeypatch.setenv("CIOQ_TRACK_URL", upstreams["a"])
    settings = load_settings()
    assert [ws.name for ws in settings.workspaces] == ["default", "a", "b"]

    with serve_in_thread(create_app(settings, triggers=RecordingTriggers())) as url:
        for i in range(10):
            for name, (site, _, ingest) in SITES.items():
                # Basic with the *other* site id: only the key decides the workspace.
                other = SITES["b" if name == "a" else "a"][0]
                auth = (other, ingest) if i % 2 else (site, ingest)
                r = httpx.post(
                    f"{url}/api/v1/customers/{name}-{i}/events", json={"name": "e"}, auth=auth
                )
                assert r.status_code == 200, r.text
            bearer = {"Authorization": f"Bearer {SITES['b'][2]}"}
            r = httpx.put(f"{url}/api/v1/customers/b-bearer-{i}", json={}, headers=bearer)
            assert r.status_code == 200

    drainer = build_drainer(settings, redis_client)
    for ws in ("default", "a", "b"):
        for shard in range(settings.queue.shards):
            assert drainer.drain(ws, shard, Lane.TRACK).stopped == "empty"

    for name, (site, _, _) in SITES.items():
        records = _records(upstreams[name], "/_sandbox/received")
        people = sorted(r["op"]["identifiers"]["id"] for r in records)
        expected = [f"{name}-{i}" for i in range(10)]
        if name == "b":
            expected += [f"b-bearer-{i}" for i in range(10)]
        assert people == sorted(expected)
        assert {r["site_id"] for r in records} == {site}
        statuses = {req["status"] for req in _records(upstreams[name], "/_sandbox/requests")}
        assert statuses == {200}, f"workspace {name} saw refused requests: {statuses}"
