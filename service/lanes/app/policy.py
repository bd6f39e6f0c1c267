"""At most once: what the App API lane may do after each kind of answer to a send.

Transactional sends and broadcast triggers have no idempotency key upstream (reference
`cdp-and-app-api.md` §2.5, §3): a second request after Customer.io acted on the first
delivers twice (a trigger: to the whole audience). So the rule is the reverse of the
batch lanes': a request is sent again only when Customer.io cannot have acted on it.

* It never left: connection refused, DNS failure, connect timeout, no pooled connection
  free. The request was never written, so it is resent.
* Customer.io said it did not act: 429 (rate limit), or 503 *with* ``Retry-After`` (the
  server declined before doing anything and says when to come back). Resent after the wait.
* Anything else after the request was written is **ambiguous**: a read timeout, a reset or
  closed connection mid-response, 500/502/504, a 503 without ``Retry-After``, any other
  answer that is neither 2xx nor 4xx. It is never resent; it goes to the dead letters as
  ``ambiguous`` for an operator (who checks Customer.io's message log, then replays or
  purges), unless the workspace opted in to ``app_resend_ambiguous`` ("may deliver twice").
* 401: the App API key is wrong; nothing was sent. The workspace's App lane pauses, jobs kept.
* Other 4xx: Customer.io refused the message (its body says why); dead-lettered ``refused``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from service.delivery.outcomes import Transport

#: Failures where the request cannot have reached Customer.io's application.
NOT_SENT = frozenset(
    {Transport.CONNECT_REFUSED, Transport.DNS, Transport.CONNECT_TIMEOUT, Transport.POOL_TIMEOUT}
)


class Verdict(StrEnum):
    DELIVERED = "delivered"  # 2xx: Customer.io's answer is the outcome
    RESEND = "resend"  # Customer.io cannot have acted: send again after a wait
    THROTTLED = "throttled"  # 429: send again after Retry-After, holding the whole class
    SETUP = "setup"  # 401: pause the workspace's App lane, keep the job
    REFUSED = "refused"  # 4xx: dead letter with Customer.io's message
    AMBIGUOUS = "ambiguous"  # Customer.io may have acted: dead letter, never resent


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    retry_after_s: float | None = None
    #: True when the verdict resends an ambiguous request on the workspace's opt-in.
    may_duplicate: bool = False


def decide(
    status: int | None,
    *,
    transport: Transport | None = None,
    retry_after_s: float | None = None,
    resend_ambiguous: bool = False,
) -> Decision:
    """The verdict for one attempt: an HTTP `status`, or a `transport` failure (status None)."""
    if status is None:
        if transport in NOT_SENT:
            return Decision(Verdict.RESEND)
        return _ambiguous(resend_ambiguous)
    if 200 <= status < 300:
        return Decision(Verdict.DELIVERED)
    if status == 429:
        return Decision(Verdict.THROTTLED, retry_after_s)
    if status == 503 and retry_after_s is not None:
        return Decision(Verdict.RESEND, retry_after_s)
    if status == 401:
        return Decision(Verdict.SETUP)
    if 400 <= status < 500:
        return Decision(Verdict.REFUSED)
    return _ambiguous(resend_ambiguous)


def _ambiguous(resend: bool) -> Decision:
    if resend:
        return Decision(Verdict.RESEND, may_duplicate=True)
    return Decision(Verdict.AMBIGUOUS)
