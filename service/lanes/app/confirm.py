"""Resolving an ambiguous send by asking Customer.io whether it queued the message.

After an ambiguous failure (the request was written, no usable answer came back), the
person's deliveries are looked up (``GET /v1/customers/{id}/messages``, under the 10/s
App API budget). The send is taken as delivered only when exactly one message matches
*every* test below; anything less leaves it ambiguous for an operator:

* it was created at or after the attempt (whole seconds, one second of slack);
* it is of the send's kind (email, push, ...) and names the same template
  (``transactional_message_id``); a message that carries no template id never matches,
  so a campaign email to the same person cannot be mistaken for the send;
* its recipient is the send's ``to`` when both are known;
* its delivery id was not already claimed by another send cioq delivered.

How far this goes: a "not found" proves nothing (Customer.io creates deliveries
asynchronously, so a queued message may appear later), so only positive matches resolve.
Broadcast triggers are never looked up: a trigger's id only comes back in the answer
that was lost. Sends by ``cio_id`` are looked up by that id type.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from service import keys
from service.config import Workspace
from service.lanes.app.client import AppClient
from service.lanes.app.outcomes import decode_body
from service.lanes.app.rate_limit import LimitClass, RateLimiter
from service.store.connections import SyncStore, store_errors

#: Claimed delivery ids are kept in hourly sets, the current and the previous one read.
_CLAIM_WINDOW_S = 3600
_LOOKUP_WAIT_MS = 1000
_SLACK_S = 1


@dataclass(frozen=True, slots=True)
class Found:
    delivery_id: str
    #: The answer the producer gets, in the shape of Customer.io's send answer.
    answer: dict[str, Any]


def _kind_of(path: str) -> str | None:
    prefix = "/v1/send/"
    return path[len(prefix) :] if path.startswith(prefix) else None


def matches(message: Any, *, kind: str, template: Any, to: Any, since_s: float) -> bool:
    """Whether one message object from Customer.io is this send's delivery."""
    if not isinstance(message, dict) or message.get("type") != kind:
        return False
    created = message.get("created")
    if not isinstance(created, int) or created < int(since_s) - _SLACK_S:
        return False
    found_template = message.get("transactional_message_id")
    if found_template is None or str(found_template) != str(template):
        return False
    recipient = message.get("recipient")
    return not (to and recipient and str(recipient) != str(to))


def _claim_keys(workspace: str, now_s: float) -> list[str]:
    hour = int(now_s // _CLAIM_WINDOW_S)
    return [keys.app_claimed(workspace, h) for h in (hour, hour - 1)]


def claim_of(workspace: str, delivery_id: str) -> tuple[str, str, int]:
    """What marks a delivery id as one cioq's own send received, for the outcome record's
    script to write with the send's outcome: (set key, id, TTL s)."""
    return _claim_keys(workspace, time.time())[0], delivery_id, 2 * _CLAIM_WINDOW_S


class Confirmer:
    def __init__(
        self, client: SyncStore, limiter: RateLimiter, app: AppClient, workspace: Workspace
    ) -> None:
        self.redis = client
        self.limiter = limiter
        self.app = app
        self.workspace = workspace

    def _claims(self, now_s: float) -> list[str]:
        return _claim_keys(self.workspace.name, now_s)

    def claim(self, delivery_id: str) -> tuple[str, str, int]:
        return claim_of(self.workspace.name, delivery_id)

    def find(self, envelope: dict[str, Any], *, since_s: float) -> Found | None:
        """The one delivery this ambiguous send created, or None when not certain."""
        kind = _kind_of(str(envelope.get("path", "")))
        body = envelope.get("body")
        if kind is None or not isinstance(body, dict):
            return None
        template = body.get("transactional_message_id")
        ident = body.get("identifiers")
        if template is None or not isinstance(ident, dict) or len(ident) != 1:
            return None
        id_type, person = next(iter(ident.items()))
        slot = self.limiter.reserve(
            self.workspace.name, LimitClass.APP, max_wait_ms=_LOOKUP_WAIT_MS
        )
        if not slot.granted:
            return None
        time.sleep(slot.wait_s)
        path = f"/v1/customers/{quote(str(person), safe='')}/messages"
        query = f"id_type={id_type}&start_ts={int(since_s) - _SLACK_S}"
        answer = self.app.send("GET", f"{path}?{query}", b"")
        if answer.status != 200:
            return None
        doc = decode_body(answer.body)
        messages = doc.get("messages") if isinstance(doc, dict) else None
        if not isinstance(messages, list):
            return None
        to = body.get("to")
        candidates = [
            m for m in messages if matches(m, kind=kind, template=template, to=to, since_s=since_s)
        ]
        claimed = self._claimed({str(m.get("id")) for m in candidates})
        unclaimed = [m for m in candidates if str(m.get("id")) not in claimed]
        if len(unclaimed) != 1:
            return None
        delivery_id = str(unclaimed[0]["id"])
        if not self._take(delivery_id):  # a concurrent lookup took it first: not certain
            return None
        return Found(
            delivery_id, {"delivery_id": delivery_id, "queued_at": unclaimed[0]["created"]}
        )

    def _take(self, delivery_id: str) -> bool:
        """Claim `delivery_id` for this send now, atomically: True if no other send has.

        Checking the claim sets and writing the claim later (with the outcome) let two
        concurrent lookups confirm two sends with one message."""
        current, *older = self._claims(time.time())
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(current, delivery_id)
        pipe.expire(current, 2 * _CLAIM_WINDOW_S)
        for key in older:
            pipe.sismember(key, delivery_id)
        with store_errors("claiming a delivery"):
            added, _, *elsewhere = pipe.execute()
        return bool(added) and not any(elsewhere)

    def _claimed(self, ids: set[str]) -> set[str]:
        if not ids:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        ordered = sorted(ids)
        for key in self._claims(time.time()):
            pipe.smismember(key, ordered)
        found: set[str] = set()
        with store_errors("claimed deliveries"):
            results = pipe.execute()
        for flags in results:
            found |= {i for i, flag in zip(ordered, flags, strict=True) if flag}
        return found
