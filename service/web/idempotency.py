"""``Idempotency-Key``: a repeat within the window gets the first answer and queues nothing.

Each stored part of a keyed request leaves a marker in its shard that keeps the first
answer (see `Queue.enqueue_once`), so "stored" and "remembered" cannot disagree: a
repeat finds the answer (under the key, or in the markers when that write was lost), or
the first request stored nothing and the repeat is a first try.
Only accepted requests are remembered; a refused or unstored one may be sent again.
A key is one request: reused for a different method, path or body it is refused with 422,
as the IETF Idempotency-Key draft says, instead of answering for a request never stored.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence

import orjson

from service import keys
from service.config import QueueSettings, Workspace
from service.errors import (
    FieldError,
    InvalidRequest,
    ShardsBusy,
    StoredUnconfirmed,
    StoreUnavailable,
)
from service.jobs import Job, job_kind
from service.store.connections import AsyncStore, store_errors
from service.store.forget import Forgetting
from service.store.forget_run import Person
from service.store.queue import HeldTriggers, Queue
from service.store.tombstones import FORGOTTEN_RULE, DropPlace
from service.web.http import Request, Response

log = logging.getLogger("cioq.ingest")

HEADER = b"idempotency-key"
MAX_KEY_CHARS = 255
#: Visible ASCII only: the key becomes part of a Redis key and must read back unchanged.
_KEY = re.compile(r"[\x21-\x7e]+")
#: Marks an answer replayed from the first request (the header name Stripe uses).
REPLAYED = (b"idempotent-replayed", b"true")
#: Says how many jobs of a call suppress mode dropped (``forgotten_person=<n>``).
DROPPED_HEADER = b"cioq-dropped"


def key_of(header: str | None) -> str | None:
    """The request's Idempotency-Key, None without one; InvalidRequest when malformed."""
    if header is None:
        return None
    if len(header) > MAX_KEY_CHARS:
        raise InvalidRequest(
            [
                FieldError(
                    "Idempotency-Key",
                    "max_length",
                    f"the Idempotency-Key header is over {MAX_KEY_CHARS} characters",
                    MAX_KEY_CHARS,
                    len(header),
                )
            ]
        )
    if not _KEY.fullmatch(header):
        raise InvalidRequest(
            [
                FieldError(
                    "Idempotency-Key",
                    "format",
                    "the Idempotency-Key header must be 1 or more visible ASCII characters",
                )
            ]
        )
    return header


def fingerprint(req: Request) -> str:
    """What makes two requests the same request: method, path, query and body bytes."""
    digest = hashlib.sha256()
    for part in (req.method, req.raw_path, req.query):
        digest.update(part.encode("latin-1") + b"\0")
    digest.update(req.body)
    return digest.hexdigest()


def _encode(answer: Response, request: str) -> bytes:
    return orjson.dumps({"status": answer.status, "body": answer.body.decode(), "request": request})


def _replay(stored: bytes, request: str) -> Response:
    data = orjson.loads(stored)
    if data.get("request") != request:
        raise InvalidRequest(
            [
                FieldError(
                    "Idempotency-Key",
                    "reused",
                    "this Idempotency-Key was already used for a different request",
                )
            ],
            status=422,
        )
    return Response(int(data["status"]), str(data["body"]).encode(), (REPLAYED,))


class Idempotency:
    """Stores a request's jobs once per (workspace, Idempotency-Key) within the window."""

    def __init__(self, queue: Queue, markers: QueueSettings, *, lease_ms: int = 60_000) -> None:
        self.queue = queue
        self.window_ms = int(markers.idempotency_window_s * 1000)
        self.forgetting = Forgetting(queue.redis, markers, lease_ms=lease_ms, triggers=None)

    async def store(
        self,
        req: Request,
        ws: Workspace,
        key: str,
        jobs: Sequence[Job],
        answer: Response,
        held: HeldTriggers | None = None,
    ) -> Response:
        """`answer` once the jobs are stored; the first request's answer on a repeat."""
        request = fingerprint(req)
        try:
            first = await self.queue.enqueue_once(
                ws.name,
                jobs,
                key=keys.idempotency(ws.name, key),
                answer=_encode(answer, request),
                window_ms=self.window_ms,
                traffic=req.traffic,
                producer=req.producer,
                held=held,
            )
        except StoredUnconfirmed as exc:
            # Stored (now or by the first try) but not confirmed: the caller decides
            # whether that may be answered; it is answered as the first try was.
            exc.answer = answer if exc.earlier is None else _replay(exc.earlier, request)
            raise
        return answer if first is None else _replay(first, request)

    async def enqueue(
        self,
        req: Request,
        ws: Workspace,
        jobs: Sequence[Job],
        answer: Response,
        held: HeldTriggers | None = None,
    ) -> Response:
        """Store a request's jobs, once per ``Idempotency-Key`` when it carries one.

        In a workspace's suppress mode, jobs naming a forgotten person are dropped first.
        With `held`, the drain triggers are left there for the caller (`Queue.trigger`).
        """
        if ws.forget_suppress:
            jobs, answer = await self._suppress(ws, jobs, answer)
        if ws.forget_on_delete:
            await self._before_deletes(ws, jobs, req.producer)
        key = key_of(req.header(HEADER))
        if key is not None:
            return await self.store(req, ws, key, jobs, answer, held)
        await self.queue.enqueue(
            ws.name, jobs, traffic=req.traffic, producer=req.producer, held=held
        )
        return answer

    async def _before_deletes(self, ws: Workspace, jobs: Sequence[Job], producer: str) -> None:
        """Remove the older pending jobs and letters of each person a job deletes, before
        the delete is stored (so it is never among what is removed). A shard a drain
        keeps past the wait is left as it is: the delete still goes, after those jobs."""
        erased = [job_kind(job.kind).erases(orjson.loads(job.payload)) for job in jobs]
        for identifiers in {tuple(sorted(e.items())) for e in erased if e}:
            person = Person.named(ws.name, dict(identifiers))
            try:
                await self.forgetting.before_delete(person, producer=producer)
            except ShardsBusy:
                log.warning("a producer's delete: some shards stayed leased; older jobs kept")

    async def _suppress(
        self, ws: Workspace, jobs: Sequence[Job], answer: Response
    ) -> tuple[Sequence[Job], Response]:
        """Drop (and count) the jobs naming a forgotten person. A call left with none is
        refused with 409 naming the rule (a 4xx: the producer does not send it again);
        a batch that keeps others' jobs stores them and says how many it dropped in a
        header, as the lane's own answer has no place for it."""
        tombstones = self.queue.tombstones
        gone = await tombstones.forgotten_jobs(ws.name, jobs)
        dropped = sum(gone)
        if not dropped:
            return jobs, answer
        await tombstones.count_dropped(ws.name, DropPlace.INGEST, dropped)
        if dropped == len(jobs):
            raise InvalidRequest(
                [
                    FieldError(
                        "person",
                        FORGOTTEN_RULE,
                        "names a person this workspace was told to forget (suppress mode): "
                        "dropped, not queued",
                    )
                ],
                status=409,
            )
        kept = [job for job, g in zip(jobs, gone, strict=True) if not g]
        header = (DROPPED_HEADER, f"{FORGOTTEN_RULE}={dropped}".encode())
        return kept, Response(answer.status, answer.body, (*answer.headers, header))


async def remembered(client: AsyncStore, ws: Workspace, req: Request) -> Response | None:
    """The first answer to this keyed request, when Redis still gives it; else None.

    Used when the ingest gate could not read the store: a repeat of a request that was
    stored must not be answered 5xx (its client would send it again)."""
    try:
        key = key_of(req.header(HEADER))
    except InvalidRequest:
        return None
    if key is None:
        return None
    try:
        with store_errors("idempotency"):
            stored = await client.get(keys.idempotency(ws.name, key))
    except StoreUnavailable:
        return None
    if stored is None:
        return None
    return _replay(stored if isinstance(stored, bytes) else stored.encode(), fingerprint(req))
