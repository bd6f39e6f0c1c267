"""The Track API routes cioq accepts, each turned into jobs and stored before answering.

v1 calls with a v2 equivalent become exactly one v2 operation; the few without one are
stored as v1 jobs and forwarded unchanged. A request is all-or-nothing: every op is
validated first, and nothing of a refused request is queued.
"""

from __future__ import annotations

import time
from typing import Any

from service.config import Settings, Workspace
from service.errors import FieldError, InvalidRequest
from service.jobs import Job
from service.lanes.track import delivery_events, translate
from service.lanes.track.jobs import v1_job, v2_job
from service.lanes.track.limits import Limits
from service.lanes.track.validation import drop_unknown, op_size_error, validate_op
from service.store.queue import Queue
from service.web import idempotency
from service.web.http import OK, Request, Response, Route, json_response

#: The most field errors one 400 lists; a bad batch of 10,000 ops stays readable.
MAX_REPORTED_ERRORS = 100
#: Person actions that carry a ``timestamp`` (Unix seconds); identify's also orders
#: attribute updates. Stamped with the accept time where the producer sent none.
TIMED_ACTIONS = frozenset({"identify", "event", "page", "screen"})


def stamp_timestamp(op: dict[str, Any], now_s: int) -> dict[str, Any]:
    """`op` with the accept time as its ``timestamp`` if it is a timed op without one."""
    if op.get("type") != "person" or op.get("action") not in TIMED_ACTIONS or "timestamp" in op:
        return op
    return {**op, "timestamp": now_s}


def _object(body: Any, field: str = "body") -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidRequest.of(field, "type", "the request body must be a JSON object")
    return body


class Ingest:
    """Handlers for the producer-facing Track API."""

    def __init__(self, queue: Queue, settings: Settings) -> None:
        self.queue = queue
        self.idempotency = idempotency.Idempotency(
            queue, settings.queue, lease_ms=settings.drain.lease_ms
        )
        self.loose_limits = Limits(max_op_bytes=settings.limits.max_op_bytes)
        self.strict_limits = Limits(max_op_bytes=settings.limits.max_op_bytes, strict=True)
        self.stamp_timestamps = settings.limits.stamp_timestamps

    def _limits(self, ws: Workspace) -> Limits:
        return self.strict_limits if ws.strict_validation else self.loose_limits

    def routes(self) -> list[Route]:
        c = ("api", "v1", "customers", "{id}")
        return [
            Route("PUT", c, "v1.identify", self.identify),
            Route("DELETE", c, "v1.delete", self.delete),
            Route("POST", (*c, "events"), "v1.track", self.track),
            Route("PUT", (*c, "devices"), "v1.add_device", self.add_device),
            Route("DELETE", (*c, "devices", "{device}"), "v1.delete_device", self.delete_device),
            Route("POST", (*c, "suppress"), "v1.suppress", self.suppress),
            Route("POST", (*c, "unsuppress"), "v1.unsuppress", self.unsuppress),
            Route("POST", ("api", "v1", "events"), "v1.track_anonymous", self.track_anonymous),
            Route("POST", ("api", "v1", "merge_customers"), "v1.merge", self.merge),
            Route(
                "POST",
                ("api", "v1", "segments", "{segment}", "add_customers"),
                "v1.segment_add",
                self.segment,
            ),
            Route(
                "POST",
                ("api", "v1", "segments", "{segment}", "remove_customers"),
                "v1.segment_remove",
                self.segment,
            ),
            Route("POST", ("api", "v1", "forms", "{form}", "submit"), "v1.form", self.form),
            Route("POST", ("unsubscribe", "{delivery}"), "v1.unsubscribe", self.unsubscribe),
            Route("POST", ("api", "v1", "push", "events"), "v1.push_event", self.push_event),
            Route("POST", ("api", "v1", "metrics"), "v1.metric", self.metric),
            Route("GET", ("api", "v1", "accounts", "region"), "v1.region", self.region),
            Route("POST", ("api", "v2", "entity"), "v2.entity", self.entity),
            Route("POST", ("api", "v2", "batch"), "v2.batch", self.batch),
        ]

    async def identify(self, req: Request, ws: Workspace) -> Response:
        ops = translate.identify_ops(req.params[0], _object(req.json()), limits=self._limits(ws))
        return await self._store_ops(req, ws, ops)

    async def delete(self, req: Request, ws: Workspace) -> Response:
        return await self._store_ops(
            req, ws, [translate.delete(req.params[0], limits=self._limits(ws))]
        )

    async def track(self, req: Request, ws: Workspace) -> Response:
        op = translate.track(req.params[0], _object(req.json()), limits=self._limits(ws))
        return await self._store_ops(req, ws, [op])

    async def add_device(self, req: Request, ws: Workspace) -> Response:
        op = translate.add_device(req.params[0], _object(req.json()), limits=self._limits(ws))
        return await self._store_ops(req, ws, [op])

    async def delete_device(self, req: Request, ws: Workspace) -> Response:
        op = translate.delete_device(req.params[0], req.params[1], limits=self._limits(ws))
        return await self._store_ops(req, ws, [op])

    async def suppress(self, req: Request, ws: Workspace) -> Response:
        return await self._store_ops(
            req, ws, [translate.suppress(req.params[0], limits=self._limits(ws))]
        )

    async def unsuppress(self, req: Request, ws: Workspace) -> Response:
        op = translate.unsuppress(req.params[0], limits=self._limits(ws))
        return await self._store_ops(req, ws, [op])

    async def track_anonymous(self, req: Request, ws: Workspace) -> Response:
        body = _object(req.json())
        op = translate.track_anonymous(body, limits=self._limits(ws))
        if op is not None:
            return await self._store_ops(req, ws, [op])
        translate.check_anonymous_v1(body, limits=self._limits(ws))
        recipient = body.get("data", {}).get("recipient", "") if isinstance(body, dict) else ""
        job = v1_job(
            "POST", "/api/v1/events", body, route=f"invite:{recipient}", op_type="invite_event"
        )
        return await self._store_jobs(req, ws, [job])

    async def merge(self, req: Request, ws: Workspace) -> Response:
        op = translate.merge(_object(req.json()), limits=self._limits(ws))
        return await self._store_ops(req, ws, [op])

    async def segment(self, req: Request, ws: Workspace) -> Response:
        body = _object(req.json())
        translate.segment_ids(body, limits=self._limits(ws))
        action = req.segments[-1]
        job = v1_job(
            "POST",
            req.raw_path,
            body,
            route=f"segment:{req.params[0]}",
            op_type=action,
            query=req.query,
        )
        return await self._store_jobs(req, ws, [job])

    async def form(self, req: Request, ws: Workspace) -> Response:
        body = _object(req.json())
        if not isinstance(body.get("data"), dict):
            raise InvalidRequest.of("data", "required", "data must be an object of fields")
        job = v1_job(
            "POST",
            req.raw_path,
            body,
            route=f"form:{req.params[0]}",
            op_type="form_submit",
        )
        return await self._store_jobs(req, ws, [job], answer=Response(204, b""))

    async def unsubscribe(self, req: Request, ws: Workspace) -> Response:
        body = _object(req.json())
        value = body.get("unsubscribe")
        # The document makes it optional; a strict workspace wants it said.
        if not isinstance(value, bool) and (value is not None or ws.strict_validation):
            raise InvalidRequest.of("unsubscribe", "required", "unsubscribe must be true or false")
        job = v1_job(
            "POST",
            req.raw_path,
            body,
            route=f"delivery:{req.params[0]}",
            op_type="unsubscribe",
        )
        return await self._store_jobs(req, ws, [job])

    async def push_event(self, req: Request, ws: Workspace) -> Response:
        body = _object(req.json())
        op = delivery_events.push_event(body, limits=self._limits(ws))
        if op is not None:
            return await self._store_ops(req, ws, [op])
        data = delivery_events.check_push_v1(body, limits=self._limits(ws))
        job = v1_job(
            "POST",
            "/api/v1/push/events",
            data,
            route=f"delivery:{data.get('delivery_id')}",
            op_type="push_event",
        )
        return await self._store_jobs(req, ws, [job])

    async def metric(self, req: Request, ws: Workspace) -> Response:
        body = _object(req.json())
        op = delivery_events.metric(body, limits=self._limits(ws))
        if op is not None:
            return await self._store_ops(req, ws, [op])
        delivery_events.check_metric_v1(body, limits=self._limits(ws))
        job = v1_job(
            "POST",
            "/api/v1/metrics",
            body,
            route=f"delivery:{body.get('delivery_id')}",
            op_type="metric",
        )
        return await self._store_jobs(req, ws, [job])

    async def region(self, req: Request, ws: Workspace) -> Response:
        """Customer.io's region lookup, answered for the caller's workspace.

        ``url`` is where the caller reached cioq, not Customer.io's host: a client that
        follows it keeps sending through cioq and never sends its ingest key upstream.
        """
        return json_response(
            200, {"url": req.base_url, "region": ws.region, "environment_id": ws.environment_id}
        )

    async def entity(self, req: Request, ws: Workspace) -> Response:
        op = req.json() if ws.strict_validation else drop_unknown(req.json())
        errors = validate_op(op, where="", limits=self._limits(ws))
        if errors or not isinstance(op, dict):
            raise InvalidRequest(errors[:MAX_REPORTED_ERRORS])
        return await self._store_ops(req, ws, [translate.ensure_event_id(op)])

    async def batch(self, req: Request, ws: Workspace) -> Response:
        body = req.json()
        ops = body.get("batch") if isinstance(body, dict) else None
        if not ws.strict_validation and isinstance(body, dict) and ops in (None, []):
            return OK  # the document makes batch optional: nothing to do, nothing queued
        if not isinstance(ops, list) or not ops:
            raise InvalidRequest.of(
                "batch", "required", "batch must be a non-empty list of operations"
            )
        if not ws.strict_validation:
            ops = [drop_unknown(op) for op in ops]
        errors: list[FieldError] = []
        for i, op in enumerate(ops):
            errors.extend(validate_op(op, where=f"batch[{i}]", limits=self._limits(ws)))
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
        if errors:
            raise InvalidRequest(errors[:MAX_REPORTED_ERRORS])
        return await self._store_ops(
            req, ws, [translate.ensure_event_id(op) for op in ops], batch=True
        )

    async def _store_ops(
        self, req: Request, ws: Workspace, ops: list[dict[str, Any]], *, batch: bool = False
    ) -> Response:
        jobs: list[Job] = []
        errors: list[FieldError] = []
        now_s = int(time.time())
        for i, op in enumerate(ops):
            job = v2_job(stamp_timestamp(op, now_s) if self.stamp_timestamps else op)
            label = f"batch[{i}]" if batch else ""
            error = op_size_error(job.payload, where=label, limits=self._limits(ws))
            if error is not None:
                errors.append(error)
            jobs.append(job)
        if errors:
            raise InvalidRequest(errors[:MAX_REPORTED_ERRORS])
        return await self._store_jobs(req, ws, jobs)

    async def _store_jobs(
        self, req: Request, ws: Workspace, jobs: list[Job], answer: Response = OK
    ) -> Response:
        return await self.idempotency.enqueue(req, ws, jobs, answer)
