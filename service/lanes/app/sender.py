"""The App lane's upstream call for the shared drain engine: one job, one request, at most once.

`AppSender.send_batch` takes one stored job (its envelope), waits for the job's slot of
the cluster-wide rate limit (`service.lanes.app.rate_limit`), sends it with `AppClient`,
applies the at-most-once policy (`service.lanes.app.policy`), records the outcome for
the producer (`service.lanes.app.outcomes`) and tells the engine what to do as an
`Outcome`:

=============  ==================  ==============================================
verdict        engine class        what the engine does
=============  ==================  ==============================================
delivered      success             delete the job
refused (4xx)  invalid             dead-letter with Customer.io's message
ambiguous      ambiguous           dead-letter as ``ambiguous``; never resent
resend         transient           back off (Retry-After) and send again
throttled 429  throttle            pause the workspace's App lane (Retry-After)
setup 401      setup               pause the workspace's App lane, keep the job
no slot soon   deferred            hand the shard back until the slot; no attempt
=============  ==================  ==============================================
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import orjson

from service.config import AppLaneSettings, RedisSettings, Workspace
from service.delivery.outcomes import Outcome, OutcomeClass
from service.delivery.upstream import Answer, KeptAnswer
from service.lanes.app import confirm
from service.lanes.app.client import AppClient
from service.lanes.app.outcomes import FINAL, Outcomes, State, decode_body, delivered
from service.lanes.app.outcomes import Outcome as Record
from service.lanes.app.policy import Verdict, decide
from service.lanes.app.rate_limit import LimitClass, RateLimiter, Reservation, reservation
from service.metrics import app_lane as metrics
from service.store.connections import connect_sync

log = logging.getLogger("cioq.app")

#: How long the whole class holds after a 429 without ``Retry-After``.
_DEFAULT_HOLD_S = 1.0


def _error_text(answer: Answer) -> str:
    body = decode_body(answer.body)
    if isinstance(body, dict):
        meta = body.get("meta")
        if isinstance(meta, dict) and meta.get("error"):
            return str(meta["error"])
        errors = body.get("errors")
        if errors:
            return orjson.dumps(errors).decode()[:500]
    return str(body)[:500] if body else ""


def describe(answer: Answer) -> str:
    """Everything known about an attempt, for the dead letter an operator reads."""
    what = f"HTTP {answer.status}" if answer.status is not None else str(answer.transport)
    text = _error_text(answer) if answer.status is not None else answer.detail
    return f"{what} after {answer.elapsed_s:.3f} s" + (f": {text}" if text else "")


@dataclass(frozen=True, slots=True)
class _Job:
    workspace: str
    id: str
    kind: str


class AppSender:
    """Sends one workspace's App lane jobs; the engine's `LaneClient` for the App lanes."""

    def __init__(
        self,
        workspace: Workspace,
        app: AppLaneSettings,
        redis: RedisSettings,
        *,
        timeout_s: float,
    ) -> None:
        self.workspace = workspace
        self.app = app
        self.client = AppClient(workspace, timeout_s=timeout_s)
        self.redis = connect_sync(redis)
        self.limiter = RateLimiter(self.redis, app)
        self.outcomes = Outcomes(self.redis, app)
        self.confirmer = confirm.Confirmer(self.redis, self.limiter, self.client, workspace)
        #: Slots taken with the in-flight note of the job (its stored body) about to go out.
        self._taken: dict[bytes, Reservation] = {}
        #: Answers the api's own sends got (`answered`), by the job's stored body.
        self._answered: dict[bytes, KeptAnswer] = {}

    def answered(self, body: bytes, answer: KeptAnswer) -> None:
        """The api sent the job `body` and got `answer`: `send_batch` settles by it."""
        self._answered = {body: answer}

    def slot_request(self, body: bytes) -> _SlotRequest:
        """The rate-limit slot of the job `body`, to ask in the drain's in-flight-note
        round trip (one round trip less per send); `send_batch` then sends on it."""
        return _SlotRequest(self, body)

    def send_batch(self, body: bytes, *, op_count: int) -> Outcome:
        """Send the one job whose stored envelope is `body`."""
        envelope: dict[str, Any] = orjson.loads(body)
        ws = self.workspace.name
        limit_class = LimitClass(envelope.get("limit", LimitClass.SEND))
        answered = self._answered.pop(body, None)
        slot = self._taken.pop(body, None)  # asked with the in-flight note (`slot_request`)
        self._taken.clear()
        if answered is not None:
            return self._timed(envelope, limit_class, answered.answer, answered.sent_at_s)
        if slot is None:
            slot = self.limiter.reserve(
                ws,
                limit_class,
                name=str(envelope.get("bucket", "")),
                max_wait_ms=self.app.app_token_wait_max_ms,
            )
        if not slot.granted:
            metrics.rate_deferred(ws, limit_class)
            return Outcome(OutcomeClass.DEFERRED, None, "rate_limit", retry_after_s=slot.wait_s)
        metrics.rate_wait(ws, limit_class, slot.wait_s)
        if slot.wait_s:
            time.sleep(slot.wait_s)
        sent_at_s = time.time()
        answer = self.client.send("POST", envelope["path"], orjson.dumps(envelope["body"]))
        return self._timed(envelope, limit_class, answer, sent_at_s)

    def _timed(
        self, envelope: dict[str, Any], limit_class: LimitClass, answer: Answer, sent_at_s: float
    ) -> Outcome:
        """`_settle`, its outcome timed by the request alone: not the wait for its slot,
        and for the api's send its own request, not the settling."""
        outcome = self._settle(envelope, limit_class, answer, sent_at_s)
        return replace(outcome, upstream_s=answer.elapsed_s)

    def _settle(
        self, envelope: dict[str, Any], limit_class: LimitClass, answer: Answer, sent_at_s: float
    ) -> Outcome:
        """What Customer.io's `answer` to the job's send makes of it (the table above)."""
        ws = self.workspace.name
        decision = decide(
            answer.status,
            transport=answer.transport,
            retry_after_s=answer.retry_after_s,
            resend_ambiguous=self.workspace.app_resend_ambiguous,
        )
        metrics.send(ws, limit_class, decision.verdict)
        job = _Job(ws, str(envelope["id"]), str(envelope.get("op_type", "")))
        verdict = decision.verdict
        if verdict is Verdict.AMBIGUOUS:
            return self._ambiguous(job, envelope, answer, sent_at_s)
        if verdict is Verdict.DELIVERED:
            assert answer.status is not None
            record = delivered(job.id, job.kind, answer.status, answer.body)
            claim = None if record.delivery_id is None else self.confirmer.claim(record.delivery_id)
            # Written by the drain in its resolve's round trip, ahead of the resolve.
            pending = self.outcomes.pending(ws, record, claim=claim)
            return Outcome(OutcomeClass.SUCCESS, answer.status, pending=pending)
        if verdict is Verdict.REFUSED:
            self._record(job, State.REFUSED, answer, _error_text(answer))
            return Outcome(OutcomeClass.INVALID, answer.status, _error_text(answer))
        self._record(job, State.RETRYING, answer, describe(answer))
        if verdict is Verdict.THROTTLED:
            hold_s = answer.retry_after_s or _DEFAULT_HOLD_S
            bucket = str(envelope.get("bucket", ""))
            self.limiter.hold(ws, limit_class, name=bucket, hold_ms=int(hold_s * 1000))
            return Outcome(OutcomeClass.THROTTLE, 429, describe(answer), retry_after_s=hold_s)
        if verdict is Verdict.SETUP:
            return Outcome(OutcomeClass.SETUP, answer.status, _error_text(answer))
        if decision.may_duplicate:
            metrics.ambiguous(ws, "resent")
            log.warning(
                "resending ambiguous %s %s (app_resend_ambiguous: may deliver twice): %s",
                job.kind,
                job.id,
                describe(answer),
            )
        detail = str(answer.transport) if answer.status is None else describe(answer)
        return Outcome(
            OutcomeClass.TRANSIENT, answer.status, detail, retry_after_s=decision.retry_after_s
        )

    def _ambiguous(
        self, job: _Job, envelope: dict[str, Any], answer: Answer, sent_at_s: float
    ) -> Outcome:
        """Customer.io may have acted: delivered if the message lookup finds exactly this
        send's message, else dead-lettered as ambiguous; never sent again."""
        found = self.confirmer.find(envelope, since_s=sent_at_s)
        if found is not None:
            metrics.ambiguous(job.workspace, "confirmed")
            log.warning(
                "ambiguous %s %s confirmed by the message lookup: %s", job.kind, job.id, found
            )
            record = Record(
                job.id,
                State.DELIVERED,
                job.kind,
                200,
                found.answer,
                describe(answer),
                delivery_id=found.delivery_id,
            )
            claim = self.confirmer.claim(found.delivery_id)
            self.outcomes.record(job.workspace, record, claim=claim)
            return Outcome(OutcomeClass.SUCCESS, 200, "confirmed by message lookup")
        metrics.ambiguous(job.workspace, "dead_lettered")
        text = (
            f"ambiguous: {describe(answer)}. Customer.io may have acted on it; check its "
            "message log, then replay (may deliver twice) or purge"
        )
        self._record(job, State.AMBIGUOUS, answer, text)
        return Outcome(OutcomeClass.AMBIGUOUS, answer.status, text)

    def _record(self, job: _Job, state: State, answer: Answer, detail: str) -> None:
        body = decode_body(answer.body)
        record = Record(job.id, state, job.kind, answer.status, body, detail)
        self.outcomes.record(job.workspace, record)

    def was_delivered(self, payload: bytes) -> bool:
        """Whether the job's outcome record says Customer.io answered 2xx (a worker that
        died after the answer and before deleting the job must not send it again)."""
        job_id = str(orjson.loads(payload)["id"])
        found = self.outcomes.get(self.workspace.name, job_id)
        return found is not None and found.state is State.DELIVERED

    def dead_lettered(self, payload: bytes, *, outcome_class: str, message: str) -> None:
        """The engine dead-lettered the job (retry budget spent, crash): make it final."""
        envelope = orjson.loads(payload)
        job_id, ws = str(envelope["id"]), self.workspace.name
        found = self.outcomes.get(ws, job_id)
        if found is not None and found.state in FINAL:
            return
        state = State.AMBIGUOUS if outcome_class == "ambiguous" else State.DEAD
        status = found.status if found is not None else None
        kind = str(envelope.get("op_type", ""))
        self.outcomes.record(ws, Record(job_id, state, kind, status, None, message), attempt=False)

    def close(self) -> None:
        self.client.close()
        self.redis.close()


class _SlotRequest:
    """`AppSender.slot_request`: a `SlotRequest` for one job."""

    def __init__(self, sender: AppSender, body: bytes) -> None:
        self.sender = sender
        self.body = body

    def queue(self, pipe: Any) -> None:
        envelope: dict[str, Any] = orjson.loads(self.body)
        self.sender.limiter.queue_reserve(
            pipe,
            self.sender.workspace.name,
            LimitClass(envelope.get("limit", LimitClass.SEND)),
            name=str(envelope.get("bucket", "")),
            max_wait_ms=self.sender.app.app_token_wait_max_ms,
        )

    def take(self, reply: Any) -> None:
        # Kept for this job's send only; failed (NOSCRIPT), the send reserves on its own.
        found = reservation(reply)
        self.sender._taken.clear()
        if found is not None:
            self.sender._taken[self.body] = found
