"""Every lane, in one table: what differs per lane, behind one seam.

The engine (`workers.drain`), the store, dead letters and metrics know a lane only
through this table (and the kinds it registers in `service.jobs`): none of them switch
on a lane or a job kind. A lane is registered with:

* its job kinds (`service.jobs.JobKind`: stream field, restore, subjects, person) and
  whether it batches: batch kinds from several heads share one request body, the
  others go out one job per request;
* its ingest routes (a factory given the queue and settings);
* the byte limits a request body and a single job must keep (measured on the exact
  bytes sent);
* a transform of a batch before it goes out (Track's coalescing) and how an answer
  about the rewritten body maps back to the stored jobs;
* what a send cut off without an answer means: by default the job may have killed its
  worker and crash search finds out (`service.delivery.crash_search`); a lane that is
  never resent (App) says instead whether the job was delivered;
* what follows a dead letter (the App lane makes the producer's outcome final);
* what a lone job must take before it goes out (the App lane's rate-limit slot);
* the upstream client for a workspace (None when the workspace has no credentials
  for the lane), whose class also owns the lane's outcome parsing.

Adding a lane is a folder under ``service/lanes/`` plus one `LaneSpec` given to
`register`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from service.config import Settings, Workspace
from service.delivery.outcomes import Outcome, SlotRequest
from service.delivery.upstream import KeptAnswer, LaneClient
from service.jobs import (
    Job,
    JobKind,
    Lane,
    LaneTraits,
    person_routes,
    register_lane,
    unregister_lane,
)
from service.lanes.app import jobs as app_jobs
from service.lanes.app.late_poll import ActivityPoller, workspace_pollers
from service.lanes.app.routes import AppIngest
from service.lanes.app.sender import AppSender
from service.lanes.pipelines import jobs as pipelines_jobs
from service.lanes.pipelines.client import PipelinesClient
from service.lanes.pipelines.routes import PipelinesIngest
from service.lanes.track import jobs as track_jobs
from service.lanes.track.client import TrackClient, send_unit
from service.lanes.track.coalesce import Coalesced, coalesce_batch, expand_item_errors
from service.lanes.track.routes import Ingest
from service.store.connections import SyncStore
from service.store.queue import Queue
from service.web.http import Route


def _send_batch(client: LaneClient, kind: str, body: bytes, op_count: int) -> Outcome:
    return client.send_batch(body, op_count=op_count)


@dataclass(frozen=True, slots=True)
class Transform:
    """A lane's rewrite of a batch's ops before they go out, and its way back."""

    #: Whether the settings turn the rewrite on.
    enabled: Callable[[Settings], bool]
    #: The ops to send instead, and for each stored op the index of the sent op carrying it.
    merge: Callable[[Sequence[bytes], int], Coalesced]
    #: An answer about the sent ops, restated per stored op (by the same origin indexes).
    expand: Callable[[Outcome, tuple[int, ...]], Outcome]


@dataclass(frozen=True, slots=True)
class LaneSpec:
    """Everything that differs per lane (see the module docstring)."""

    lane: Lane
    #: Job kinds stored in this lane's streams.
    kinds: tuple[JobKind, ...]
    #: Whether drains wait (linger) to fill batch requests and pack other shards' heads.
    batches: bool
    routes: Callable[[Queue, Settings], list[Route]]
    max_batch_bytes: Callable[[Settings], int]
    max_item_bytes: Callable[[Settings], int]
    client: Callable[[Workspace, Settings], LaneClient | None]
    #: Whether a workspace delivers this lane (it has the lane's credentials).
    serves: Callable[[Workspace], bool] = lambda ws: True
    #: How the client sends a unit of a job kind (its body, how many jobs it carries).
    send: Callable[[LaneClient, str, bytes, int], Outcome] = _send_batch
    transform: Transform | None = None
    #: For a lane whose jobs are never sent twice: whether the job a cut-off send left
    #: was delivered, given the client and its payload. None: crash search resends.
    interrupted: Callable[[LaneClient, bytes], bool] | None = None
    #: Called with the client, a dead-lettered job's payload, its class and message.
    after_dead_letter: Callable[[LaneClient, bytes, str, str], None] | None = None
    #: What a lone job must take before it goes out, given the client and the job's body:
    #: asked in the round trip of the job's in-flight note. None: the lane takes nothing.
    slot_request: Callable[[LaneClient, bytes], SlotRequest] | None = None
    #: Gives the client the answer the api's own send of a job got (its body): the next
    #: send of that body is settled by it, not sent. None: the api sends none of the lane.
    answered: Callable[[LaneClient, bytes, KeptAnswer], None] | None = None
    #: Whether the lane's Redis keys name it (`service.keys`). Track's do not: they predate
    #: lanes, and the queues already in Redis are written under them.
    named_in_keys: bool = True
    #: The routes of a person's jobs, by identifier (forget reads only their shards);
    #: None when the lane does not route by person (forget reads every shard).
    person_routes: Callable[[str, str], tuple[str, ...]] | None = None
    #: The job deleting a person at Customer.io, by identifier (forget's delete_upstream).
    person_delete: Callable[[str, str], Job] | None = None

    @property
    def traits(self) -> LaneTraits:
        key_infix = f":{self.lane}" if self.named_in_keys else ""
        return LaneTraits(
            self.lane,
            self.kinds,
            self.batches,
            self.serves,
            key_infix,
            self.person_routes,
            self.person_delete,
        )


LANES: dict[Lane, LaneSpec] = {}


def register(spec: LaneSpec) -> None:
    """Make a lane known to ingest, the engine, the store and metrics."""
    LANES[spec.lane] = spec
    register_lane(spec.traits)


def unregister(lane: Lane) -> None:
    """Forget a lane registered for a while (a test's)."""
    del LANES[lane]
    unregister_lane(lane)


def ingest_routes(queue: Queue, settings: Settings) -> list[Route]:
    """Every lane's ingest routes, for the one listener."""
    return [route for spec in LANES.values() for route in spec.routes(queue, settings)]


def late_pollers(settings: Settings, client: SyncStore) -> list[ActivityPoller]:
    """The activity-log pollers of late failures (App lane), one per App-keyed workspace."""
    return workspace_pollers(settings, client)


def clients(settings: Settings) -> dict[tuple[str, Lane], LaneClient]:
    """Each workspace's client per lane it has credentials for."""
    found: dict[tuple[str, Lane], LaneClient] = {}
    for ws in settings.workspaces:
        for spec in LANES.values():
            client = spec.client(ws, settings)
            if client is not None:
                found[(ws.name, spec.lane)] = client
    return found


def _track_client(ws: Workspace, s: Settings) -> TrackClient:
    return TrackClient(ws, timeout_s=s.drain.upstream_timeout_s)


def _pipelines_client(ws: Workspace, s: Settings) -> PipelinesClient | None:
    if ws.cdp_api_key is None:
        return None
    return PipelinesClient(ws, timeout_s=s.drain.upstream_timeout_s)


def _app_sender(ws: Workspace, s: Settings) -> AppSender | None:
    if ws.app_api_key is None:
        return None
    return AppSender(ws, s.app, s.redis, timeout_s=s.drain.upstream_timeout_s)


def _sender(client: LaneClient) -> AppSender:
    assert isinstance(client, AppSender)  # the App lanes' clients are built above
    return client


def _was_delivered(client: LaneClient, payload: bytes) -> bool:
    return _sender(client).was_delivered(payload)


def _app_dead_lettered(
    client: LaneClient, payload: bytes, outcome_class: str, message: str
) -> None:
    # The producer's status URL must say so.
    _sender(client).dead_lettered(payload, outcome_class=outcome_class, message=message)


def _app_slot(client: LaneClient, body: bytes) -> SlotRequest:
    return _sender(client).slot_request(body)


def _app_answered(client: LaneClient, body: bytes, answer: KeptAnswer) -> None:
    _sender(client).answered(body, answer)


def _app_lane(lane: Lane, routes: Callable[[Queue, Settings], list[Route]]) -> LaneSpec:
    """An App API lane: one request per job, never batched, never resent after a cut-off."""
    return LaneSpec(
        lane,
        (app_jobs.APP,),
        batches=False,
        routes=routes,
        max_batch_bytes=lambda s: s.listener.max_request_bytes,
        max_item_bytes=lambda s: s.listener.max_request_bytes,
        client=_app_sender,
        serves=lambda ws: ws.app_api_key is not None,
        interrupted=_was_delivered,
        after_dead_letter=_app_dead_lettered,
        slot_request=_app_slot,
        answered=_app_answered,
    )


register(
    LaneSpec(
        Lane.TRACK,
        (track_jobs.V2, track_jobs.V1),
        batches=True,
        routes=lambda queue, s: Ingest(queue, s).routes(),
        max_batch_bytes=lambda s: s.limits.max_batch_bytes,
        max_item_bytes=lambda s: s.limits.max_op_bytes,
        client=_track_client,
        send=send_unit,
        transform=Transform(
            enabled=lambda s: s.limits.coalesce,
            merge=lambda ops, max_op_bytes: coalesce_batch(ops, max_op_bytes=max_op_bytes),
            expand=expand_item_errors,
        ),
        named_in_keys=False,
        person_routes=person_routes,
        person_delete=track_jobs.person_delete,
    )
)
register(
    LaneSpec(
        Lane.PIPELINES,
        (pipelines_jobs.CDP,),
        batches=True,
        routes=lambda queue, s: PipelinesIngest(queue, s).routes(),
        max_batch_bytes=lambda s: s.limits.cdp_max_batch_bytes,
        max_item_bytes=lambda s: s.limits.cdp_max_call_bytes,
        client=_pipelines_client,
        serves=lambda ws: ws.cdp_api_key is not None,
        # Pipelines' routes name people as Track's do (`pipelines_jobs.cdp_route`).
        person_routes=person_routes,
    )
)
register(_app_lane(Lane.APP, lambda queue, s: AppIngest(queue, s).routes()))
# Broadcast triggers: App jobs in streams of their own (`service.lanes.app.jobs`);
# their routes are the App lane's.
register(_app_lane(Lane.BROADCASTS, lambda queue, s: []))
