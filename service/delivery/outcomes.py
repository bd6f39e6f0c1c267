"""Classification of everything Customer.io can answer, as one pure function.

=========  ===========================================  =====================================
class      when                                         what the drain does
=========  ===========================================  =====================================
success    2xx without item errors                      delete the ops
partial    207 (or 200) naming items by ``batch_index``  dead-letter those items, delete all
invalid    400/413/422 and other 4xx for the request     split in halves until isolated
setup      401/403, 404/405, redirects                  pause the workspace, keep the jobs
throttle   429                                          pause the workspace (Retry-After)
transient  408, 5xx, timeouts, connection errors        back off and retry the shard
ambiguous  (App lane) Customer.io may have acted         dead-letter; never resend
deferred   (App lane) no rate-limit slot soon enough     hand the shard back, no attempt
=========  ===========================================  =====================================
"""

from __future__ import annotations

import email.utils
import math
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import orjson


class Transport(StrEnum):
    """How a request failed below HTTP, as the client module observed it."""

    CONNECT_REFUSED = "connect_refused"
    DNS = "dns"
    CONNECT_TIMEOUT = "connect_timeout"
    POOL_TIMEOUT = "pool_timeout"
    WRITE_ERROR = "write_error"
    READ_TIMEOUT = "read_timeout"
    RESET = "reset"
    PROTOCOL = "protocol"


class OutcomeClass(StrEnum):
    SUCCESS = "success"
    PARTIAL = "partial"
    INVALID = "invalid"
    SETUP = "setup"
    THROTTLE = "throttle"
    TRANSIENT = "transient"
    AMBIGUOUS = "ambiguous"
    #: Nothing was sent now (an App send with no rate slot soon enough): no request.
    DEFERRED = "deferred"


#: Classes after which the ops of the request are resolved (sent or dead-lettered).
RESOLVED = frozenset({OutcomeClass.SUCCESS, OutcomeClass.PARTIAL})


@dataclass(frozen=True, slots=True)
class ItemError:
    """One op Customer.io refused inside an otherwise accepted batch."""

    batch_index: int
    reason: str
    field: str
    message: str


class PendingWrite(Protocol):
    """A lane's record of a success that must be in Redis before the jobs are resolved
    (the App lane's outcome for the producer): the drain sends it in its resolve's round
    trip, ahead of the resolve."""

    def queue(self, pipe: Any) -> None:
        """Queue the write on a single Redis's pipeline; it must not meet ``NOSCRIPT``."""

    def run(self) -> None:
        """Write it on its own (a cluster, whose pipelines refuse scripts)."""


class SlotRequest(Protocol):
    """What a job must take before it goes out (the App lane's rate-limit slot), asked in
    the round trip that writes the job's in-flight note; the client then sends on it."""

    def queue(self, pipe: Any) -> None:
        """Queue the request on a single Redis's pipeline (by sha: a NOSCRIPT reply only
        means the client takes the slot itself)."""

    def take(self, reply: Any) -> None:
        """The pipeline's reply to it (an exception when it failed)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one upstream request came to."""

    outcome_class: OutcomeClass
    status: int | None
    detail: str = ""
    item_errors: tuple[ItemError, ...] = ()
    retry_after_s: float | None = None
    #: Written before the jobs are resolved, in the same round trip (success only).
    pending: PendingWrite | None = None
    #: The request's own time on the wire, when the lane knows it apart from the call that
    #: returned this (an App send's wait for its rate slot, or the api's send settled later).
    upstream_s: float | None = None

    @property
    def status_class(self) -> str:
        """A bounded label for metrics: ``2xx``..``5xx`` or the transport error kind."""
        if self.status is None:
            return self.detail or "error"
        return f"{self.status // 100}xx"


#: The longest Retry-After honoured: a day (a pause past that is an operator's call).
MAX_RETRY_AFTER_S = 86_400.0


def parse_retry_after(value: str | None, *, now_s: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # "nan" and "inf" parse as floats; they are no wait cioq can keep (int(nan) raised
        # in the drain), so they count as no header, and a huge wait is capped.
        return min(max(seconds, 0.0), MAX_RETRY_AFTER_S) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now_s is None else now_s
    return min(max(when.timestamp() - now, 0.0), MAX_RETRY_AFTER_S)


def _item_errors(body: bytes, op_count: int) -> tuple[ItemError, ...]:
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return ()
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list):
        return ()
    found: dict[int, ItemError] = {}
    for err in errors:
        if not isinstance(err, dict):
            continue
        index = err.get("batch_index")
        # Errors without a usable index cannot be tied to an op; Customer.io's own
        # contributors say unnamed items were accepted, so they are not failures.
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < op_count:
            continue
        found.setdefault(
            index,
            ItemError(
                batch_index=index,
                reason=str(err.get("reason", "")),
                field=str(err.get("field", "")),
                message=str(err.get("message", "")),
            ),
        )
    return tuple(found[i] for i in sorted(found))


def classify(
    status: int | None,
    body: bytes = b"",
    *,
    op_count: int = 1,
    retry_after: str | None = None,
    transport_error: str | None = None,
) -> Outcome:
    """Classify one upstream answer; `transport_error` names a failure with no answer."""
    if status is None:
        return Outcome(OutcomeClass.TRANSIENT, None, detail=transport_error or "error")
    wait_s = parse_retry_after(retry_after)
    if 200 <= status < 300:
        items = _item_errors(body, op_count) if status in (200, 207) else ()
        if items:
            return Outcome(OutcomeClass.PARTIAL, status, item_errors=items)
        return Outcome(OutcomeClass.SUCCESS, status)
    if status == 429:
        return Outcome(OutcomeClass.THROTTLE, status, retry_after_s=wait_s)
    if status in (401, 403, 404, 405) or 300 <= status < 400:
        return Outcome(OutcomeClass.SETUP, status, detail=_snippet(body))
    if status == 408 or status >= 500:
        return Outcome(OutcomeClass.TRANSIENT, status, retry_after_s=wait_s)
    return Outcome(OutcomeClass.INVALID, status, detail=_snippet(body))


def _snippet(body: bytes, limit: int = 300) -> str:
    return body[:limit].decode("utf-8", "replace")
