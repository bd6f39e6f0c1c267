"""Helpers for tests of late failures: calls a drain delivers to the sandbox, which fails
them afterwards, and the records the poller makes of them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import httpx
import orjson
import redis
from ulid import ULID

from service import keys
from service.config import Settings
from service.jobs import PRODUCER_FIELD, Lane, Traffic, shard_for
from service.lanes.app.client import AppClient
from service.lanes.app.late_poll import ActivityPoller
from service.lanes.track.jobs import v2_job
from tests.support.drain import build_drainer
from tests.support.streams import stream_entries

APP_KEY = "dev-app-key"
#: Every call the sandbox accepts fails, and shows in its log at once.
ALL_FAIL_AT_ONCE = {"rate": 1.0, "min_delay_s": 0.0, "max_delay_s": 0.0}


def late_sandbox(url: str) -> Iterator[httpx.Client]:
    """The sandbox at `url`, reset, failing every call it accepts at once."""
    with httpx.Client(base_url=url, timeout=10) as client:
        client.post("/_sandbox/reset").raise_for_status()
        client.post("/_sandbox/late_failures", json=ALL_FAIL_AT_ONCE).raise_for_status()
        yield client


def identify(n: int, **attributes: Any) -> dict[str, Any]:
    return {
        "type": "person",
        "action": "identify",
        "identifiers": {"id": f"p{n}"},
        "attributes": {"email": f"p{n}@example.com", "plan": "pro", **attributes},
    }


def event(n: int) -> dict[str, Any]:
    return {
        "type": "person",
        "action": "event",
        "identifiers": {"id": f"p{n}"},
        "name": "signed_up",
        "id": str(ULID()),
        "attributes": {"plan": "pro"},
    }


def enqueue(client: redis.Redis, ops: list[tuple[dict[str, Any], str]]) -> dict[str, str]:
    """Store each op in shard 0 of 1 as ingest does, with its producer; person → job id."""
    ids: dict[str, str] = {}
    for op, producer in ops:
        job = v2_job(op)
        shard = keys.shard_keys("default", shard_for("default", job.route, 1), Lane.TRACK)
        fields = {job.field: job.payload, PRODUCER_FIELD: producer}
        entry = cast(bytes, client.xadd(shard.stream, fields))  # type: ignore[arg-type]
        ids[op["identifiers"]["id"]] = f"{shard.tag}:{entry.decode()}"
    return ids


def drain(settings: Settings, client: redis.Redis) -> int:
    """Drain shard 0 of the Track lane; returns the jobs delivered."""
    report = build_drainer(settings, client).drain("default", 0, Lane.TRACK, Traffic.LIVE)
    return report.delivered


def records(client: redis.Redis) -> list[dict[str, Any]]:
    """The late-failure records of workspace ``default``, oldest first."""
    rows = stream_entries(client, keys.late_failures("default"))
    return [orjson.loads(fields[b"r"]) for _, fields in rows]


class Poller:
    """An `ActivityPoller` of workspace ``default`` whose first walk has set its cursors; it
    records a failure it cannot link at once (`unlinked_wait_s`), unless told otherwise."""

    def __init__(self, settings: Settings, client: redis.Redis, unlinked_wait_s: int = 0) -> None:
        ws = settings.workspace("default")
        self.http = AppClient(ws, timeout_s=5)
        self.poller = ActivityPoller(
            client, settings.app, ws, self.http, unlinked_wait_s=unlinked_wait_s
        )
        self.poller.poll()

    def walk(self) -> int:
        return self.poller.poll().recorded

    def close(self) -> None:
        self.http.close()
