"""The round trips of the api's own App sends (`service.lanes.app.inline`).

Each runs under the shard's lease in the scripts a drain uses (``inline_take.lua`` writes
the note ``inflight.lua`` would; ``resolve_release.lua``, ``release.lua`` and
``clear_inflight.lua`` are the drain's own), so a drain takes over from any of them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.exceptions import NoScriptError

from service import keys
from service.config import Settings, Workspace
from service.delivery.upstream import Answer, encode_answer
from service.errors import StoreUnavailable
from service.jobs import Job
from service.lanes.app.outcomes import Outcome, record_call
from service.lanes.app.rate_limit import LimitClass, Reservation, limit_for, reservation
from service.metrics import app_lane as app_metrics
from service.metrics.queue_state import queue_drained
from service.store import durability
from service.store.connections import STORE_ERRORS, AsyncStore, load_script, lua_source
from service.store.durability import Confirmation
from service.stream_ids import next_id

log = logging.getLogger("cioq.app")

#: Called by sha; the record, the kept answer and the clear of an unsent note go by EVAL.
_SCRIPTS = ("inline_take", "resolve_release", "release", "token_bucket")


class Inline(StrEnum):
    """What became of a job the api could send (``cioq_app_inline_sends_total``)."""

    SENT = "sent"
    #: Left to a worker: the shard was held, waited out a retry, held an older job first,
    #: or had a cut-off send of this job (``inline_take.lua``) ...
    BUSY = "busy"
    RETRY = "retry"
    BEHIND = "behind"
    CUT_OFF = "cut_off"
    #: ... or the shard was taken and given back: the lane is paused, no rate slot came
    #: soon enough, Redis failed ...
    PAUSED = "paused"
    NO_SLOT = "no_slot"
    STORE_ERROR = "store_error"
    #: The note was not confirmed at the durability level (``WAITAOF``/``WAIT``).
    UNCONFIRMED = "unconfirmed"
    #: ... or `MAX_RUNNING` sends were under way.
    FULL = "full"


@dataclass(frozen=True, slots=True)
class InlineJob:
    """A stored App job the api may send: its envelope and what its metrics name."""

    job: Job
    job_id: str
    limit: LimitClass
    bucket: str
    producer: str


class InlineStore:
    """The Redis side of the api's own App sends, on its asyncio client (a standalone
    Redis: on a cluster the take's keys span two slots, and `InlineSends` sends none)."""

    def __init__(self, client: AsyncStore, settings: Settings) -> None:
        self.redis = client
        self.app = settings.app
        self.lease_ms = settings.drain.lease_ms
        self.metrics = settings.metrics
        self._shas = {name: load_script(client, name).sha for name in _SCRIPTS}
        self._loaded = False

    async def take(
        self,
        ws: Workspace,
        job: InlineJob,
        shard: keys.ShardKeys,
        confirmation: Confirmation | None = None,
    ) -> tuple[int, bytes] | Inline:
        """The lease token and the job's entry id; else why a drain sends
        the job (paused, no slot, a store error after the take: the lease was taken and
        given back; otherwise nothing was written). The slot is asked only once the shard
        is taken: asked with the take, every declined take spent one, and under the 100/s
        limit with 1,000 queued sends 78/s went out instead of 97. At a durability level
        that confirms writes, the note is confirmed on the take's connection before the
        send goes out, as a drain's is (`Lease.mark_inflight`); unconfirmed, it is cleared
        and nothing is sent."""
        if not self._loaded:
            await self.load_scripts()
            self._loaded = True
        pipe = self.redis.pipeline(transaction=False)
        take_keys = [shard.lease, shard.fence, shard.retry, shard.stream, shard.inflight]
        pipe.evalsha(
            self._shas["inline_take"],
            len(take_keys),
            *take_keys,
            self.lease_ms,
            job.job.payload,
            int(time.time() * 1000),
        )
        pipe.pttl(keys.pause(ws.name, shard.lane))
        confirm = durability.commands(confirmation)
        for command in confirm:
            pipe.execute_command(*command)
        took, pause_ms, *confirmed = await pipe.execute(raise_on_error=False)
        if isinstance(took, NoScriptError):
            self._loaded = False  # Redis restarted or flushed its scripts: load them again
        if isinstance(took, bytes):
            return Inline(took.decode())
        if not isinstance(took, list):
            return Inline.STORE_ERROR  # nothing was written; its trigger is sent all the same
        token, entry_id = int(took[0]), bytes(took[1])
        declined = _declined(confirmation if confirm else None, confirmed, pause_ms)
        if declined is None:
            slot = await self.slot(ws, job)
            if slot is not None and slot.granted:
                app_metrics.rate_wait(ws.name, job.limit, slot.wait_s)
                return token, entry_id
            declined = Inline.NO_SLOT
            if slot is not None:
                app_metrics.rate_deferred(ws.name, job.limit)
        await self.give_back(shard, token)
        return declined

    async def slot(self, ws: Workspace, job: InlineJob) -> Reservation | None:
        """The job's slot of its rate limit if one is free now (nothing is reserved
        otherwise). Not one later: an event loop that sleeps for many slots at once wakes
        them late and together, and with 1,000 sends queued under Customer.io's 100/s a
        second of them went past it (a 429); a worker waits for its slot in a process
        of its own."""
        limit = limit_for(job.limit, self.app)
        try:
            reply = await self.redis.evalsha(
                self._shas["token_bucket"],
                1,
                keys.rate_bucket(ws.name, job.limit, job.bucket),
                limit.interval_us,
                limit.burst,
                0,
            )
        except NoScriptError:
            self._loaded = False
            return None
        except STORE_ERRORS:
            return None
        return reservation(reply)

    async def give_back(self, shard: keys.ShardKeys, token: int) -> None:
        """Nothing was sent: clear the note and hand the lease back, fenced."""
        pipe = self.redis.pipeline(transaction=False)
        # By EVAL: should only this script have left Redis's cache (a restart, another
        # client loading the rest), a NOSCRIPT here would let the release go and leave the
        # note, and the unsent job be dead-lettered as ambiguous.
        pipe.eval(lua_source("clear_inflight"), 2, shard.inflight, shard.lease, token)
        pipe.evalsha(self._shas["release"], 3, shard.lease, shard.trigger, shard.stream, token, 0)
        cleared, _ = await pipe.execute(raise_on_error=False)
        if isinstance(cleared, Exception):
            # The note may stay: the next drain dead-letters the job as ambiguous rather
            # than send what it cannot tell was not sent. Logged, as it costs a send.
            log.error("%s: an unsent note could not be cleared: %s", shard.tag, cleared)

    async def record_delivered(
        self,
        ws: Workspace,
        shard: keys.ShardKeys,
        token: int,
        entry_id: bytes,
        record: Outcome,
        claim: tuple[str, str, int] | None,
    ) -> bool:
        """Write a 2xx's outcome record (and delivered-id claim), trim the job and, when
        the shard is then empty, give the lease back: one round trip, as a drain's
        resolve. True when jobs came after this one and the lease is still held (the
        caller releases it). Raises the store's errors: the note then stays."""
        call = record_call(
            ws.name,
            record,
            int(self.app.app_outcome_ttl_s * 1000),
            attempt=True,
            claim=claim,
            wake=False,
        )
        pipe = self.redis.pipeline(transaction=False)
        # By EVAL, as a drain's: a NOSCRIPT must not let the resolve run without the record.
        pipe.eval(lua_source("app_outcome"), 3, *call["keys"], *call["args"])
        resolve_keys = [shard.stream, shard.lease, shard.retry, shard.trigger]
        pipe.evalsha(self._shas["resolve_release"], 4, *resolve_keys, token, next_id(entry_id))
        queue_drained(pipe, ws.name, 1, self.metrics)
        replies = await pipe.execute(raise_on_error=False)
        written, resolved = replies[0], replies[1]
        for reply in (written, resolved):
            if isinstance(reply, Exception):
                if isinstance(reply, NoScriptError):
                    self._loaded = False
                raise reply
        if not isinstance(resolved, list):
            log.warning("%s: lease lost during an App send", shard.tag)  # its drain settles
            return False
        return not resolved[1]

    async def release(self, shard: keys.ShardKeys, token: int, *, marker_ms: int) -> int:
        """Give the lease back (the trigger marker kept `marker_ms`); the jobs left."""
        release_keys = (shard.lease, shard.trigger, shard.stream)
        return int(
            await self.redis.evalsha(self._shas["release"], 3, *release_keys, token, marker_ms)
        )

    async def hand_over(
        self,
        shard: keys.ShardKeys,
        token: int,
        entry_id: bytes,
        answer: Answer,
        sent_at_s: float,
    ) -> None:
        """An answer this module does not settle: kept with the note for the drain. By
        EVAL: lost to a NOSCRIPT, the note would stay without it and the drain take an
        answer that says nothing was done (a 429) for a cut-off send (ambiguous)."""
        kept = await self.redis.eval(
            lua_source("answered"),
            3,
            shard.inflight,
            shard.lease,
            shard.trigger,
            token,
            entry_id,
            encode_answer(answer, sent_at_s=sent_at_s),
        )
        if int(kept) < 0:
            log.warning("%s: lease lost during an App send", shard.tag)

    async def load_scripts(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for name in self._shas:
            pipe.script_load(lua_source(name))
        with contextlib.suppress(*STORE_ERRORS):
            await pipe.execute()


def _declined(
    confirmation: Confirmation | None, confirmed: list[Any], pause_ms: Any
) -> Inline | None:
    """Why a taken shard goes back before its slot is asked: its note unconfirmed at the
    durability level, or the lane paused; None when neither."""
    try:
        durability.verify(confirmation, confirmed)
    except StoreUnavailable:
        return Inline.UNCONFIRMED
    if not isinstance(pause_ms, int) or pause_ms > 0:
        return Inline.PAUSED
    return None
