"""The Pipelines (CDP) routes: ``POST /v1/identify|track|page|screen|group|alias|batch``.

Each call is validated, stamped and stored as one job of the Pipelines lane before the
answer. Stamping gives every call what a queue would otherwise lose or blur:

* ``messageId``: the producer's is kept; a call without one gets a ULID, stored with the
  job, so a re-send after a crash carries the same id;
* ``timestamp``: the accept time (ISO-8601, UTC, milliseconds) where the producer sent
  none, since Customer.io stamps an unstamped call with its own, later, receipt time
  (``CIOQ_STAMP_TIMESTAMPS=false`` turns this off);
* ``type``: the path's, so a call stays what it was once it travels in ``/v1/batch``.

A ``/v1/batch`` body's top-level ``context`` and ``integrations`` apply to all its calls
(Customer.io's batch description); the drain packs calls of many requests into one
batch, so they are copied into each call here (a call's own keys win). A request is
all-or-nothing: every call is validated first, and nothing of a refused request is queued.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from service.config import Settings, Workspace
from service.errors import FieldError, InvalidRequest
from service.jobs import Job, new_event_id
from service.lanes.pipelines.jobs import cdp_job, cdp_route
from service.lanes.pipelines.validation import CALL_TYPES, validate_call
from service.store.queue import Queue
from service.web.auth import require_lane_key
from service.web.http import OK, Request, Response, Route
from service.web.idempotency import Idempotency

#: The most field errors one 400 lists; a bad batch of 10,000 calls stays readable.
MAX_REPORTED_ERRORS = 100
_BATCH_SHARED = ("context", "integrations")


def iso_timestamp(now_s: float) -> str:
    """``2026-12-01T05:20:00.123Z``: ISO-8601 in UTC with milliseconds."""
    moment = datetime.fromtimestamp(now_s, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class PipelinesIngest:
    """Handlers for the producer-facing Pipelines API."""

    def __init__(self, queue: Queue, settings: Settings) -> None:
        self.idempotency = Idempotency(queue, settings.queue, lease_ms=settings.drain.lease_ms)
        self.max_call_bytes = settings.limits.cdp_max_call_bytes
        self.stamp_timestamps = settings.limits.stamp_timestamps

    def routes(self) -> list[Route]:
        calls = [
            Route("POST", ("v1", kind), f"cdp.{kind}", self._single(kind)) for kind in CALL_TYPES
        ]
        return [*calls, Route("POST", ("v1", "batch"), "cdp.batch", self.batch)]

    def _single(self, kind: str) -> Any:
        async def handle(req: Request, ws: Workspace) -> Response:
            _require_key(ws)
            call = req.json()
            errors = validate_call(call, call_type=kind, strict=ws.strict_validation)
            if errors:
                raise InvalidRequest(errors[:MAX_REPORTED_ERRORS])
            return await self._store(req, ws, [{**call, "type": kind}], batch=False)

        return handle

    async def batch(self, req: Request, ws: Workspace) -> Response:
        _require_key(ws)
        body = req.json()
        calls = body.get("batch") if isinstance(body, dict) else None
        if not ws.strict_validation and isinstance(body, dict) and calls in (None, []):
            return OK  # the document makes batch optional: nothing to do, nothing queued
        if not isinstance(calls, list) or not calls:
            raise InvalidRequest.of("batch", "required", "batch must be a non-empty list of calls")
        errors: list[FieldError] = []
        for name in _BATCH_SHARED:
            if name in body and not isinstance(body[name], dict):
                errors.append(FieldError(name, "type", f"{name} must be an object"))
        for i, call in enumerate(calls):
            where = f"batch[{i}]"
            errors.extend(
                validate_call(call, call_type=None, where=where, strict=ws.strict_validation)
            )
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
        if errors:
            raise InvalidRequest(errors[:MAX_REPORTED_ERRORS])
        shared = {name: body[name] for name in _BATCH_SHARED if name in body}
        return await self._store(req, ws, [_with_shared(c, shared) for c in calls], batch=True)

    async def _store(
        self, req: Request, ws: Workspace, calls: list[dict[str, Any]], *, batch: bool
    ) -> Response:
        now = iso_timestamp(time.time())
        jobs: list[Job] = []
        errors: list[FieldError] = []
        for i, call in enumerate(calls):
            stamped = self._stamp(call, now)
            job = cdp_job(stamped, route=cdp_route(stamped))
            if len(job.payload) > self.max_call_bytes:
                where = f"batch[{i}]" if batch else "body"
                errors.append(
                    FieldError(
                        where,
                        "max_bytes",
                        f"a call may be at most {self.max_call_bytes} bytes as sent "
                        "(Customer.io: 32 KB, read as 1000-byte KB)",
                        self.max_call_bytes,
                        len(job.payload),
                    )
                )
            jobs.append(job)
        if errors:
            raise InvalidRequest(errors[:MAX_REPORTED_ERRORS])
        return await self.idempotency.enqueue(req, ws, jobs, OK)

    def _stamp(self, call: dict[str, Any], now: str) -> dict[str, Any]:
        stamped = dict(call)
        if not stamped.get("messageId"):
            stamped["messageId"] = new_event_id()
        if self.stamp_timestamps and "timestamp" not in stamped:
            stamped["timestamp"] = now
        return stamped


def _with_shared(call: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    if not shared:
        return call
    merged = dict(call)
    for name, value in shared.items():
        own = call.get(name)
        merged[name] = {**value, **own} if isinstance(own, dict) else value
    return merged


def _require_key(ws: Workspace) -> None:
    """A workspace without a Pipelines key refuses, never accepting what it cannot deliver."""
    key_name = "Pipelines write key"
    require_lane_key(
        ws, ws.cdp_api_key, field="cdp_api_key", key_name=key_name, calls="Pipelines calls"
    )
