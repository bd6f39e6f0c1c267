"""The App API's send routes: ``POST /v1/send/<kind>``, broadcast triggers, job status.

A send or trigger is validated, stored as one job of the App lane, and then the request
waits up to ``CIOQ_APP_SEND_WAIT_MS`` for the worker's outcome, so that the official
clients get Customer.io's own answer (``200 {delivery_id, queued_at}``, or its 4xx). When
the outcome is not there in time (a rate-limit queue, a slow upstream), or the producer
sent ``Prefer: respond-async``, the answer is ``202 {job_id, status_url, state}``; the
status URL answers with the outcome record, to the same workspace's ingest keys only.

A send whose outcome is ambiguous or that was dead-lettered is answered 202 too, never
with a 5xx or 429: the official clients resend on those (customerio-node on 5xx/429),
which is exactly the second delivery this lane exists to prevent.

``POST /v1/send/broadcast {"id", ...}`` (the seed collection's path) is an alias of
Customer.io's ``POST /v1/campaigns/{id}/triggers``: the same job, sent to the real path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from typing import Any

import orjson

from service.config import Settings, Workspace
from service.errors import FieldError, InvalidRequest, StoredUnconfirmed, StoreUnavailable
from service.jobs import Job, new_event_id
from service.lanes.app.inline import InlineSends
from service.lanes.app.inline_store import InlineJob
from service.lanes.app.jobs import BROADCAST_ROUTE, app_job
from service.lanes.app.outcomes import FINAL, AsyncOutcomes, Outcome, State
from service.lanes.app.rate_limit import LimitClass
from service.lanes.app.reads import AppReads, require_app_key
from service.lanes.app.validation import (
    SEND_KINDS,
    broadcast_id_of,
    validate_send,
    validate_trigger,
)
from service.store.queue import HeldTriggers, Queue
from service.web.http import Request, Response, Route, json_response
from service.web.idempotency import HEADER as IDEMPOTENCY_HEADER
from service.web.idempotency import Idempotency, key_of

log = logging.getLogger("cioq.app")

STATUS_PATH = ("cioq", "v1", "jobs")
_PREFER_ASYNC = "respond-async"


class AppIngest:
    """Handlers for the producer-facing App API: sends, triggers, job status, reads."""

    def __init__(self, queue: Queue, settings: Settings) -> None:
        self.idempotency = Idempotency(queue, settings.queue, lease_ms=settings.drain.lease_ms)
        self.queue = queue
        self.inline = InlineSends(queue, settings)
        self.outcomes = AsyncOutcomes(queue.redis, settings.app)
        self.wait_ms = settings.app.app_send_wait_ms
        self.reads = AppReads(
            queue.redis, settings.app, timeout_s=settings.drain.upstream_timeout_s
        )

    def routes(self) -> list[Route]:
        sends = [
            Route("POST", ("v1", "send", kind), f"app.send_{kind}", self._send(kind))
            for kind in SEND_KINDS
        ]
        return [
            *sends,
            Route("POST", ("v1", "campaigns", "{id}", "triggers"), "app.trigger", self.trigger),
            Route("POST", ("v1", "send", "broadcast"), "app.trigger_alias", self.trigger_alias),
            Route("GET", (*STATUS_PATH, "{id}"), "app.job", self.job),
            *self.reads.routes(),
        ]

    def _send(self, kind: str) -> Any:
        async def handle(req: Request, ws: Workspace) -> Response:
            require_app_key(ws)
            body = req.json()
            errors = validate_send(kind, body, strict=ws.strict_validation)
            if errors:
                raise InvalidRequest(errors)
            job_id = new_event_id()
            job = app_job(
                job_id,
                f"/v1/send/{kind}",
                body,
                limit=LimitClass.SEND,
                route=_send_route(req, job_id),
                op_type=f"send_{kind}",
            )
            return await self._store_and_wait(req, ws, job_id, f"send_{kind}", job, LimitClass.SEND)

        return handle

    async def trigger(self, req: Request, ws: Workspace) -> Response:
        require_app_key(ws)
        broadcast_id, errors = broadcast_id_of(req.params[0], "broadcast_id")
        body = req.json()
        return await self._trigger(req, ws, broadcast_id, body, errors)

    async def trigger_alias(self, req: Request, ws: Workspace) -> Response:
        """The seed's ``{"id": <broadcast id>, ...}``: the id moves to the path."""
        require_app_key(ws)
        body = req.json()
        if not isinstance(body, dict):
            raise InvalidRequest.of("body", "type", "the body must be a JSON object")
        if "id" not in body:
            raise InvalidRequest.of("id", "required", "id (the broadcast id) is required")
        rest = {k: v for k, v in body.items() if k != "id"}
        broadcast_id, errors = broadcast_id_of(body["id"], "id")
        return await self._trigger(req, ws, broadcast_id, rest, errors)

    async def _trigger(
        self,
        req: Request,
        ws: Workspace,
        broadcast_id: int | None,
        body: Any,
        errors: list[FieldError],
    ) -> Response:
        errors = errors + validate_trigger(body, strict=ws.strict_validation)
        if errors or broadcast_id is None:
            raise InvalidRequest(errors)
        job_id = new_event_id()
        job = app_job(
            job_id,
            f"/v1/campaigns/{broadcast_id}/triggers",
            {} if body is None else body,
            limit=LimitClass.BROADCAST,
            bucket=str(broadcast_id),
            # One broadcast's triggers share a shard (of the broadcasts lane), so they leave
            # in order, one at a time, without holding back any send.
            route=f"{BROADCAST_ROUTE}{broadcast_id}",
            op_type="trigger_broadcast",
        )
        return await self._store_and_wait(
            req, ws, job_id, "trigger_broadcast", job, LimitClass.BROADCAST, str(broadcast_id)
        )

    async def _store_and_wait(
        self,
        req: Request,
        ws: Workspace,
        job_id: str,
        kind: str,
        job: Job,
        limit: LimitClass,
        bucket: str = "",
    ) -> Response:
        accepted = json_response(
            202,
            {"job_id": job_id, "status_url": _status_url(req, job_id), "state": State.QUEUED},
        )
        waits = _PREFER_ASYNC not in (req.header(b"prefer") or "").lower() and self.wait_ms > 0
        deadline_s = time.monotonic() + self.wait_ms / 1000
        # Sent by this api when it can (`service.lanes.app.inline`), whether or not the
        # producer waits for the answer: the store leaves the job's drain trigger to it.
        held = HeldTriggers() if self.inline.usable(ws) else None
        try:
            answer = await self.idempotency.enqueue(req, ws, [job], accepted, held)
        except StoredUnconfirmed as exc:
            # Stored, not yet confirmed at the durability level: it will be sent, so a 5xx
            # (which the official clients resend on) would send it twice.
            log.warning("App job %s stored but not confirmed in time; answered 202", job_id)
            answer = exc.answer if isinstance(exc.answer, Response) else accepted
        try:
            sending = None
            if held is not None:
                if answer is accepted:  # stored by this request (not a repeat of an earlier one)
                    inline = InlineJob(job, job_id, limit, bucket, req.producer)
                    sending = self.inline.start(ws, inline, held)
                else:
                    await self.queue.trigger(held)
            return await self._answer_stored(
                req,
                ws,
                job_id,
                kind,
                answer,
                sending,
                repeat=answer is not accepted,
                wait_s=(deadline_s - time.monotonic()) if waits else 0.0,
            )
        except Exception:
            # The job is stored: whatever failed after that (a store error is handled
            # there; this is anything else), a 5xx would have the official clients, which
            # resend on one, store it and send it again.
            log.exception("App job %s is stored; answering 202 after an unexpected error", job_id)
            return answer

    async def _answer_stored(
        self,
        req: Request,
        ws: Workspace,
        job_id: str,
        kind: str,
        answer: Response,
        sending: asyncio.Task[Outcome | None] | None,
        *,
        repeat: bool,
        wait_s: float,
    ) -> Response:
        """The answer for a stored job: Customer.io's, when its send ended within `wait_s`,
        else the 202 `answer` with the status URL (every store error included). A `repeat`
        (an Idempotency-Key seen before) is answered for the first request's job."""
        deadline_s = time.monotonic() + wait_s
        outcome = None
        if repeat:
            first = orjson.loads(answer.body)
            if answer.status != 202 or "job_id" not in first:
                return answer  # the first request's own final answer
            job_id = str(first["job_id"])
        if repeat and wait_s > 0:
            try:
                # Its outcome may be final already: no push to wait for then.
                outcome = await self.outcomes.get(ws.name, job_id)
            except StoreUnavailable:
                log.warning("App job %s is stored; its outcome could not be read", job_id)
            if outcome is not None and outcome.state not in FINAL:
                outcome = None
        if sending is not None and wait_s > 0:
            with contextlib.suppress(TimeoutError):
                # Shielded: a request that stops waiting (or whose client left) does not
                # cut its send off; the send records its outcome for the status URL.
                outcome = await asyncio.wait_for(asyncio.shield(sending), wait_s)
        left_ms = int((deadline_s - time.monotonic()) * 1000)
        if outcome is None and left_ms > 0:
            try:
                outcome = await self.outcomes.wait(ws.name, job_id, timeout_ms=left_ms)
            except StoreUnavailable:
                log.warning("App job %s is stored; its outcome could not be read", job_id)
        if outcome is None:
            # The queued record is for the status URL, which only a 202 hands out: written
            # then, not for every send (NX: the worker's record may be there already).
            try:
                await self.outcomes.create(ws.name, Outcome(job_id, State.QUEUED, kind))
            except StoreUnavailable:
                log.warning("App job %s is stored; its queued record could not be written", job_id)
            return answer
        if outcome.state in (State.DELIVERED, State.REFUSED):
            return _customerio_answer(outcome)
        return json_response(202, outcome.public(_status_url(req, job_id)))

    async def aclose(self) -> None:
        await self.inline.aclose()

    async def job(self, req: Request, ws: Workspace) -> Response:
        job_id = req.params[0]
        outcome = await self.outcomes.get(ws.name, job_id)
        if outcome is None:
            raise InvalidRequest(
                [FieldError("job_id", "unknown", f"no job {job_id!r} (unknown or expired)")],
                status=404,
            )
        return json_response(200, outcome.public(f"{req.base_url}{req.raw_path}"))


def _send_route(req: Request, job_id: str) -> str:
    """A keyed send's shard follows its Idempotency-Key: every try of the request lands on
    the shard holding its marker, so a repeat stores nothing. Without a key, the job's own
    id spreads sends over the shards."""
    key = key_of(req.header(IDEMPOTENCY_HEADER))
    if key is None:
        return f"send:{job_id}"
    return f"send:key:{hashlib.sha256(key.encode()).hexdigest()[:26]}"


def _status_url(req: Request, job_id: str) -> str:
    return f"{req.base_url}/{'/'.join(STATUS_PATH)}/{job_id}"


def _customerio_answer(outcome: Outcome) -> Response:
    """Customer.io's own status and body, as the official clients expect them."""
    assert outcome.status is not None
    body = outcome.body
    raw = body.encode() if isinstance(body, str) else orjson.dumps(body if body is not None else {})
    return Response(outcome.status, raw)
