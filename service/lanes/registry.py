"""What differs per lane, in one table; everything else (store, drain engine, leases,
backoff, crash search, pauses, dead letters, metrics) is shared and takes a `Lane`.

A lane is registered here with:

* its ingest routes (a factory given the queue and settings);
* the job kinds its streams hold (the ordering key is each job's ``route``, built at
  ingest: a person's calls share one route, hence one shard, hence one order);
* how stored jobs become requests: the ``{"batch":[...]}`` envelope and the byte limits
  a body and a single job must keep (measured on the exact bytes sent);
* the upstream client for a workspace (None when the workspace has no credentials for
  the lane), whose class also owns the lane's outcome parsing.

Adding a lane is a folder under ``service/lanes/`` plus one `LaneSpec` here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from service.config import Settings, Workspace
from service.delivery.client import PipelinesClient, TrackClient
from service.delivery.outcomes import Outcome
from service.jobs import Lane
from service.lanes.app.routes import AppIngest
from service.lanes.app.sender import AppSender
from service.lanes.pipelines.routes import PipelinesIngest
from service.lanes.track.routes import Ingest
from service.store.queue import Queue
from service.web.http import Route


class BatchClient(Protocol):
    """The upstream call a batch lane's drain makes."""

    def send_batch(self, body: bytes, *, op_count: int) -> Outcome: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class LaneSpec:
    lane: Lane
    #: Job kinds stored in this lane's streams.
    kinds: frozenset[str]
    routes: Callable[[Queue, Settings], list[Route]]
    max_batch_bytes: Callable[[Settings], int]
    max_item_bytes: Callable[[Settings], int]
    client: Callable[[Workspace, Settings], BatchClient | None]


def _track_client(ws: Workspace, s: Settings) -> TrackClient:
    return TrackClient(ws, timeout_s=s.upstream_timeout_s)


def _pipelines_client(ws: Workspace, s: Settings) -> PipelinesClient | None:
    if ws.cdp_api_key is None:
        return None
    return PipelinesClient(ws, timeout_s=s.upstream_timeout_s)


def _app_sender(ws: Workspace, s: Settings) -> AppSender | None:
    return AppSender(ws, s) if ws.app_api_key is not None else None


LANES: dict[Lane, LaneSpec] = {
    Lane.TRACK: LaneSpec(
        Lane.TRACK,
        frozenset({"v2", "v1"}),
        lambda queue, s: Ingest(queue, s).routes(),
        lambda s: s.max_batch_bytes,
        lambda s: s.max_op_bytes,
        _track_client,
    ),
    Lane.PIPELINES: LaneSpec(
        Lane.PIPELINES,
        frozenset({"cdp"}),
        lambda queue, s: PipelinesIngest(queue, s).routes(),
        lambda s: s.cdp_max_batch_bytes,
        lambda s: s.cdp_max_call_bytes,
        _pipelines_client,
    ),
    # One request per job, never batched (the drain sends an "app" head alone).
    Lane.APP: LaneSpec(
        Lane.APP,
        frozenset({"app"}),
        lambda queue, s: AppIngest(queue, s).routes(),
        lambda s: s.max_request_bytes,
        lambda s: s.max_request_bytes,
        _app_sender,
    ),
    # Broadcast triggers: App jobs in streams of their own (`service.jobs.Job.lane`);
    # their routes are the App lane's.
    Lane.BROADCASTS: LaneSpec(
        Lane.BROADCASTS,
        frozenset({"app"}),
        lambda queue, s: [],
        lambda s: s.max_request_bytes,
        lambda s: s.max_request_bytes,
        _app_sender,
    ),
}


def ingest_routes(queue: Queue, settings: Settings) -> list[Route]:
    """Every lane's ingest routes, for the one listener."""
    return [route for spec in LANES.values() for route in spec.routes(queue, settings)]


def clients(settings: Settings) -> dict[tuple[str, Lane], BatchClient]:
    """Each workspace's client per lane it has credentials for."""
    found: dict[tuple[str, Lane], BatchClient] = {}
    for ws in settings.workspaces:
        for spec in LANES.values():
            client = spec.client(ws, settings)
            if client is not None:
                found[(ws.name, spec.lane)] = client
    return found
