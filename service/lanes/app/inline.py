"""The api sends an App job itself when a drain would send exactly that job now.

An App send's producer waits for Customer.io's answer, so the job's way through a worker
(a trigger, Celery's consumer, a drain's three round trips, the answer pushed back) was
most of a send's cost: 2.35 ms of CPU per send against 0.505 ms for a client posting
directly (`bench/run --quick --only app`). Here the api, once the job is stored, does
what that drain would do, in the same order and under the same fenced keys:

1. one round trip: ``inline_take.lua`` takes the shard's lease and writes the send's
   in-flight note only if nobody holds the shard, it waits out no retry and this job is
   its head (so order and every drain rule hold); with it the lane's pause, and at a
   durability level that confirms writes the note's ``WAITAOF``/``WAIT``; then the job's
   rate slot, once the shard is taken;
2. the ``POST`` (`service.delivery.upstream.AsyncWire`);
3. one round trip: a 2xx writes the outcome record and the delivered-id claim, trims the
   job and gives the lease back (``resolve_release.lua``), as a drain's resolve does.

Any other answer is not settled here: ``answered.lua`` keeps it with the in-flight note
and gives the shard back, and the drain its trigger starts settles it by the lane's
policy (refused, throttled, ambiguous, ...) as if it had sent it, without sending it
again (`workers.drain.heads`). When any step before the ``POST`` declines or fails, the
note is cleared and the job goes the worker's way; a failure after it leaves the note,
so the next drain treats the send as cut off (ambiguous unless its record says
delivered), exactly as when a worker dies mid-send. Nothing here sends a job twice.
Round trips: `service.lanes.app.inline_store`.

Only on a standalone Redis (on a cluster step 1's keys span two slots); there every send
goes through a worker as before. ``CIOQ_APP_INLINE_SENDS=false`` turns it off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis

from service import keys
from service.config import Settings, Workspace
from service.delivery.outcomes import Outcome as Sent
from service.delivery.outcomes import OutcomeClass
from service.delivery.upstream import USER_AGENT, Answer, AsyncWire
from service.jobs import Traffic
from service.lanes.app.client import KEEPALIVE_S, bearer
from service.lanes.app.confirm import claim_of
from service.lanes.app.inline_store import Inline, InlineJob, InlineStore
from service.lanes.app.outcomes import Outcome, delivered
from service.lanes.app.policy import Verdict, decide
from service.metrics import app_lane as app_metrics
from service.metrics import definitions as metrics
from service.store.connections import STORE_ERRORS
from service.store.queue import HeldTriggers, Queue
from service.stream_ids import id_ms

log = logging.getLogger("cioq.app")

#: Sends under way in one api process at most (`usable`).
MAX_RUNNING = 256


class _Requeue:
    """`_send_now`: let the sends of the shard waiting behind this one go first."""


_REQUEUE = _Requeue()


class InlineSends:
    """The api's own App sends (see the module's text); one per api process."""

    def __init__(self, queue: Queue, settings: Settings) -> None:
        self.queue = queue
        self.trigger_ttl_ms = settings.queue.trigger_ttl_ms
        self.timeout_s = settings.drain.upstream_timeout_s
        client = queue.redis
        self.on = settings.app.app_inline_sends and isinstance(client, aioredis.Redis)
        self.store = InlineStore(client, settings)
        self._wires: dict[str, AsyncWire] = {}
        #: Per shard, this process's last send of it (`_send`).
        self._tails: dict[keys.ShardKeys, asyncio.Future[None]] = {}
        #: Sends under way, awaited at shutdown: one cut off leaves an ambiguous job.
        self._running: set[asyncio.Task[Outcome | None]] = set()

    @property
    def idle(self) -> bool:
        """No send under way (tests wait on it to act after the api's own send)."""
        return not self._running

    def usable(self, ws: Workspace) -> bool:
        """Whether this api sends `ws`'s next App job itself (see the module's text for
        when not). Past `MAX_RUNNING` sends under way (producers that do not wait for
        answers can post faster than Customer.io answers), the rest go to the workers."""
        if not self.on:
            return False
        if len(self._running) >= MAX_RUNNING:
            app_metrics.inline(ws.name, Inline.FULL)
            return False
        return True

    def start(
        self, ws: Workspace, job: InlineJob, held: HeldTriggers
    ) -> asyncio.Task[Outcome | None]:
        """Send `job` (stored; `held` its triggers) if a drain would send it now. The task's
        result: the delivered record, or None when a worker settles or sends it. It runs
        on when its request stops waiting (shielded). The job joins its shard's line here,
        at once, so a send of the shard ending meanwhile knows it is followed."""
        shard = self.queue.shard_of(ws.name, job.job, Traffic.LIVE)
        place = self._join(shard)
        task = asyncio.ensure_future(self._send(ws, job, held, shard, place))
        # Cancelled before it ran (a loop shutting down), it must not hold its line.
        task.add_done_callback(lambda _: _end(place[1]))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    def _join(
        self, shard: keys.ShardKeys
    ) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]:
        """The end of `shard`'s line (None: it is free) and this send's place after it."""
        before = self._tails.get(shard)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[shard] = mine
        return before, mine

    async def _send(
        self,
        ws: Workspace,
        job: InlineJob,
        held: HeldTriggers,
        shard: keys.ShardKeys,
        place: tuple[asyncio.Future[None] | None, asyncio.Future[None]],
    ) -> Outcome | None:
        """This process's sends of one shard go one after another, as a drain's would: one
        that found the shard held by the send before it would go to a worker (two Celery
        tasks: the first finds the lease taken), and with 32 producers over the default 32
        shards many sends did. A send that finds an older job of the shard first, while
        sends of it wait here, lets them go first, once: group commits may answer in
        another order than Redis stored them."""
        requeued = False
        while True:
            before, mine = place
            try:
                if before is not None:
                    await before
                sent = await self._send_now(ws, job, held, shard, mine, requeue=not requeued)
            finally:
                _end(mine)
                if self._tails.get(shard) is mine:
                    del self._tails[shard]
            if not isinstance(sent, _Requeue):
                return sent
            requeued = True
            place = self._join(shard)

    async def _send_now(
        self,
        ws: Workspace,
        job: InlineJob,
        held: HeldTriggers,
        shard: keys.ShardKeys,
        mine: asyncio.Future[None],
        *,
        requeue: bool,
    ) -> Outcome | _Requeue | None:
        """`_send`'s one try; `_REQUEUE` when the job should let the sends behind it go."""
        try:
            taken = await self.store.take(ws, job, shard, self.queue.confirmation)
        except STORE_ERRORS:
            log.warning("App job %s: taking its shard failed; a worker sends it", job.job_id)
            taken = Inline.STORE_ERROR  # whatever was written, the marker may be gone
        if taken is Inline.BEHIND and requeue and self._tails.get(shard) is not mine:
            return _REQUEUE  # nothing was written
        if isinstance(taken, Inline):
            app_metrics.inline(ws.name, taken)
            if taken is Inline.BUSY:
                # Whoever holds the shard hands it back with a trigger when work remains
                # (``release.lua`` counts the stream as it frees the lease), and this job
                # was stored before: a trigger now would only find the lease taken.
                return None
            # Always the shard's trigger, whether or not this store took the marker: the
            # marker's holder may be a send of this process that ended and left the job
            # to it (`_delivered`), or a release may have cleared it.
            held.shards = held.shards or [shard]
            await self.queue.trigger(held)
            return None
        app_metrics.inline(ws.name, Inline.SENT)
        token, entry_id = taken
        envelope = orjson.loads(job.job.payload)
        body = orjson.dumps(envelope["body"])
        sent_at_s = time.time()
        answer = await self._wire(ws).exchange("POST", envelope["path"], body)
        decision = decide(
            answer.status,
            transport=answer.transport,
            retry_after_s=answer.retry_after_s,
            resend_ambiguous=ws.app_resend_ambiguous,
        )
        try:
            if decision.verdict is Verdict.DELIVERED:
                followed = self._tails.get(shard) is not mine
                return await self._delivered(
                    ws, job, shard, token, entry_id, answer, followed=followed
                )
            await self.store.hand_over(shard, token, entry_id, answer, sent_at_s)
        except STORE_ERRORS:
            # The note stays: the next drain of the shard (after the lease) settles the
            # job as cut off, by its record. Never sent again.
            log.warning("App job %s was sent; recording its answer failed", job.job_id)
            return None
        await self.queue.trigger(HeldTriggers([shard]))
        return None

    async def _delivered(
        self,
        ws: Workspace,
        job: InlineJob,
        shard: keys.ShardKeys,
        token: int,
        entry_id: bytes,
        answer: Answer,
        *,
        followed: bool,
    ) -> Outcome | None:
        """`followed`: a send of this process waits for the shard (it triggers if need be)."""
        assert answer.status is not None
        record = delivered(job.job_id, str(job.job.op_type), answer.status, answer.body)
        claim = None if record.delivery_id is None else claim_of(ws.name, record.delivery_id)
        self._count(ws, job, answer, entry_id)
        try:
            more = await self.store.record_delivered(ws, shard, token, entry_id, record, claim)
            if more:
                # Jobs came after this one: hand the shard over as a drain does. To a send
                # of this process waiting for it, with the trigger marker kept, so neither
                # writes nor the sweeper start a drain meanwhile (it triggers if it must).
                marker_ms = self.trigger_ttl_ms if followed else 0
                left = await self.store.release(shard, token, marker_ms=marker_ms)
                if left and not followed:
                    # Often the next job is this process's, its request one turn of the
                    # loop from joining the line (6 % of sends under the App bench's load
                    # went to a worker so): it then takes the shard, or triggers it.
                    await asyncio.sleep(0)
                    if shard not in self._tails:
                        await self.queue.trigger(HeldTriggers([shard]))
        except STORE_ERRORS:
            # Whatever did not run, the note stays: the next drain resolves the job by its
            # record, or dead-letters it as ambiguous when the record is not there. The
            # producer still gets Customer.io's answer: the send happened.
            log.warning("App job %s delivered; recording it failed", job.job_id, exc_info=True)
        return record

    def _count(self, ws: Workspace, job: InlineJob, answer: Answer, entry_id: bytes) -> None:
        """The metrics a worker's drain counts for a delivered App send."""
        app_metrics.send(ws.name, job.limit, Verdict.DELIVERED)
        sent = Sent(OutcomeClass.SUCCESS, answer.status)
        metrics.upstream_request(
            ws.name,
            job.job.kind,
            sent,
            answer.elapsed_s,
            body_bytes=len(job.job.payload),
            ops=1,
            lane=job.job.lane,
        )
        now_ms = int(time.time() * 1000)
        metrics.delivered(ws.name, [(id_ms(entry_id), job.producer)], now_ms, job.job.lane)

    def _wire(self, ws: Workspace) -> AsyncWire:
        wire = self._wires.get(ws.name)
        if wire is None:
            headers = {**bearer(ws), "Content-Type": "application/json", "User-Agent": USER_AGENT}
            wire = AsyncWire(
                ws.app_base_url, headers, timeout_s=self.timeout_s, keepalive_s=KEEPALIVE_S
            )
            self._wires[ws.name] = wire
        return wire

    async def aclose(self) -> None:
        """Let the sends under way finish (bounded by the upstream timeout), then close."""
        running: Sequence[asyncio.Task[Any]] = list(self._running)
        if running:
            await asyncio.wait(running, timeout=self.timeout_s + 1)
        for wire in self._wires.values():
            await wire.aclose()


def _end(place: asyncio.Future[None]) -> None:
    if not place.done():
        place.set_result(None)
