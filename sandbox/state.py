"""What the sandbox remembers: its configuration, credentials, faults and recordings.

Everything here is mutated only from the event loop of one uvicorn process and never across an
`await`, so plain containers are safe without locks.
"""

from __future__ import annotations

import random
import secrets
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from math import inf
from typing import Any, Literal, NamedTuple

from sandbox.activities import Activities, LateFailureConfig
from sandbox.app_state import AppState

__all__ = [
    "FaultConfig",
    "Faults",
    "Injection",
    "Recorder",
    "SandboxConfig",
    "SandboxState",
]

#: Statuses below this in `status_sequence` let the request through to normal processing.
_FIRST_ERROR_STATUS = 400


@dataclass(frozen=True)
class SandboxConfig:
    """How a sandbox Customer.io behaves from start-up (and after `POST /_sandbox/reset`)."""

    credentials: dict[str, str] = field(default_factory=lambda: {"dev-site": "dev-api-key"})
    max_body_bytes: int = 500_000
    max_op_bytes: int = 32_768
    #: Pipelines write keys (Basic ``KEY:``); limits read "KB" as 1000 bytes, the strictest.
    cdp_write_keys: frozenset[str] = frozenset({"dev-cdp-key"})
    cdp_max_body_bytes: int = 500_000
    cdp_max_call_bytes: int = 32_000
    #: App API keys (Bearer) and Customer.io's published App API limits.
    app_api_keys: frozenset[str] = frozenset({"dev-app-key"})
    app_send_rps: int = 100
    app_rps: int = 10
    app_broadcast_interval_s: float = 10.0
    #: Broadcast ids that answer 404 (every other id exists).
    app_unknown_broadcasts: frozenset[int] = frozenset()
    #: "count" keeps counters and the request log but not the ops, for benchmarks.
    record: Literal["full", "count"] = "full"
    #: Ops (and request-log entries) beyond this are counted as dropped, not kept.
    max_recorded_ops: int = 2_000_000
    #: Accepted identifies and events that fail afterwards, in the activity log.
    late_failures: LateFailureConfig = field(default_factory=LateFailureConfig)

    def __post_init__(self) -> None:
        if self.record not in ("full", "count"):
            raise ValueError(f"record must be 'full' or 'count', not {self.record!r}")
        limits = (self.max_body_bytes, self.max_op_bytes, self.max_recorded_ops)
        if min(limits) < 1:
            raise ValueError("max_body_bytes, max_op_bytes and max_recorded_ops must be ≥ 1")


@dataclass(frozen=True)
class FaultConfig:
    """Fault injection settings, as posted to `/_sandbox/faults`."""

    latency_ms: int = 0
    error_rate: float = 0.0
    error_status: int = 503
    status_sequence: tuple[int, ...] = ()
    retry_after_s: float | None = None
    site_ids: frozenset[str] | None = None
    seed: int | None = None
    hang_s: float = 60.0
    #: False: ``sandbox_poison`` attributes are ignored, as if upstream had fixed the cause.
    poison: bool = True

    @classmethod
    def from_json(cls, doc: object) -> FaultConfig:
        """Build from a decoded JSON object; raise ValueError naming the first bad key."""
        if type(doc) is not dict:
            raise ValueError("faults must be a JSON object")
        unknown = doc.keys() - cls.__dataclass_fields__.keys()
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        site_ids = doc.get("site_ids")
        if site_ids is not None and not (
            type(site_ids) is list and all(type(s) is str for s in site_ids)
        ):
            raise ValueError("site_ids must be a list of strings or null")
        sequence = doc.get("status_sequence", [])
        if type(sequence) is not list:
            raise ValueError("status_sequence must be a list of HTTP statuses")
        retry_after_s = None
        if doc.get("retry_after_s") is not None:
            retry_after_s = _float_setting(doc, "retry_after_s", 0.0)
        error_status = _status(doc.get("error_status", 503), "error_status")
        if error_status < _FIRST_ERROR_STATUS:
            raise ValueError("error_status must be an error (400..599)")
        seed = doc.get("seed")
        if seed is not None and type(seed) is not int:
            raise ValueError("seed must be an integer or null")
        return cls(
            latency_ms=_int_setting(doc, "latency_ms", 0),
            error_rate=_float_setting(doc, "error_rate", 0.0, upper=1.0),
            error_status=error_status,
            status_sequence=tuple(_status(s, "status_sequence") for s in sequence),
            retry_after_s=retry_after_s,
            site_ids=None if site_ids is None else frozenset(site_ids),
            seed=seed,
            hang_s=_float_setting(doc, "hang_s", 60.0),
            poison=_bool_setting(doc, "poison", True),
        )

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON-ready values (the inverse of `from_json`)."""
        return {
            "latency_ms": self.latency_ms,
            "error_rate": self.error_rate,
            "error_status": self.error_status,
            "status_sequence": list(self.status_sequence),
            "retry_after_s": self.retry_after_s,
            "site_ids": None if self.site_ids is None else sorted(self.site_ids),
            "seed": self.seed,
            "hang_s": self.hang_s,
            "poison": self.poison,
        }


def _int_setting(doc: dict[str, Any], key: str, default: int) -> int:
    # bool is a subclass of int, and `true` is not a count; hence `type(...) is int`.
    value = doc.get(key, default)
    if type(value) is not int or value < 0:
        raise ValueError(f"{key} must be an integer ≥ 0")
    return value


def _float_setting(doc: dict[str, Any], key: str, default: float, upper: float = inf) -> float:
    value = doc.get(key, default)
    if type(value) is not int and type(value) is not float:
        raise ValueError(f"{key} must be a number")
    if not 0 <= value <= upper:
        raise ValueError(f"{key} must be between 0 and {upper}")
    return float(value)


def _bool_setting(doc: dict[str, Any], key: str, default: bool) -> bool:
    value = doc.get(key, default)
    if type(value) is not bool:
        raise ValueError(f"{key} must be true or false")
    return value


def _status(value: object, key: str) -> int:
    if type(value) is not int or not 100 <= value <= 599:
        raise ValueError(f"{key} must hold HTTP statuses (100..599)")
    return value


class Injection(NamedTuple):
    """The faults one request gets: a delay, then maybe an error status instead of an answer."""

    latency_s: float
    status: int | None
    retry_after: str | None  # Retry-After header value for an injected 429


_NO_INJECTION = Injection(0.0, None, None)


class Faults:
    """The active fault settings plus their running state (sequence left, random source)."""

    def __init__(self) -> None:
        self.set(FaultConfig())

    def set(self, config: FaultConfig) -> None:
        """Replace the settings; the status sequence and the random source start over."""
        self.config = config
        self._pending_statuses = deque(config.status_sequence)
        self._rng = random.Random(config.seed)

    def applies_to(self, site_id: str | None) -> bool:
        """Whether faults target a request made with `site_id` (None: no credentials sent)."""
        site_ids = self.config.site_ids
        return site_ids is None or site_id in site_ids

    def on_request(self, site_id: str | None) -> Injection:
        """What faults do to the request arriving now from `site_id` (None: no credentials)."""
        if not self.applies_to(site_id):
            return _NO_INJECTION
        config = self.config
        status = None
        if self._pending_statuses:
            status = self._pending_statuses.popleft()
            status = status if status >= _FIRST_ERROR_STATUS else None
        elif config.error_rate and self._rng.random() < config.error_rate:
            status = config.error_status
        retry_after = None
        if status == 429 and config.retry_after_s is not None:
            # Fractions are not standard HTTP but let tests retry fast; whole values are sent
            # as the delta-seconds integer every client understands.
            seconds = config.retry_after_s
            retry_after = str(int(seconds)) if seconds.is_integer() else str(seconds)
        return Injection(config.latency_ms / 1000, status, retry_after)

    def to_json(self) -> dict[str, Any]:
        """The settings, with `status_sequence` showing only the statuses not yet used."""
        return {**self.config.to_json(), "status_sequence": list(self._pending_statuses)}


Page = dict[str, Any]


def _page(items: list[dict[str, Any]], positions: list[int] | None, after: int, limit: int) -> Page:
    """`limit` items at positions ≥ `after`; `next` is the cursor for the following page."""
    if positions is None:
        chosen: list[dict[str, Any]] = items[after : after + limit]
        total = len(items)
        last = after + len(chosen) - 1
    else:
        start = bisect_left(positions, after)
        picked = positions[start : start + limit]
        chosen = [items[p] for p in picked]
        total = len(positions)
        last = picked[-1] if picked else -1
    # A short page means everything up to now was seen, so the cursor can skip to the end.
    cursor = last + 1 if len(chosen) == limit else len(items)
    return {"records": chosen, "next": max(after, cursor), "total": total}


class Recorder:
    """The request log, the accepted ops and the counters behind `/_sandbox/stats`."""

    def __init__(self, mode: Literal["full", "count"], max_recorded_ops: int) -> None:
        self.keep_ops = mode == "full"
        self.max_recorded_ops = max_recorded_ops
        #: Told of every accepted request's ops (the late failures draw from them).
        self.on_ops: Callable[[str, str | None, list[tuple[int, Any]], float], None] | None = None
        self.clear()

    def clear(self) -> None:
        """Forget every request, record and counter; sequence numbers start again at 1."""
        self.last_seq = 0
        self.requests: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        self.positions_by_site: dict[str, list[int]] = {}
        self.by_status: dict[str, int] = {}
        self.ops_accepted = 0
        self.ops_rejected = 0
        self.v1_accepted = 0
        self.cdp_accepted = 0
        self.app_accepted = 0
        self.max_body_bytes = 0
        self.records_dropped = 0
        self.requests_dropped = 0

    def next_seq(self) -> int:
        """Number the next request."""
        self.last_seq += 1
        return self.last_seq

    def log_request(self, entry: dict[str, Any]) -> None:
        """Log one answered request: {seq, method, path, site_id, status, body_bytes, ...}."""
        key = str(entry["status"])
        self.by_status[key] = self.by_status.get(key, 0) + 1
        self.max_body_bytes = max(self.max_body_bytes, entry["body_bytes"])
        if len(self.requests) < self.max_recorded_ops:
            self.requests.append(entry)
        else:
            self.requests_dropped += 1

    def record_ops(
        self,
        kind: Literal["v2", "v1", "cdp", "app"],
        seq: int,
        site_id: str | None,
        ops: list[tuple[int, Any]],
        received_at: float,
    ) -> None:
        """Keep accepted (index, op) pairs of request `seq` in arrival order."""
        if self.on_ops is not None:
            self.on_ops(kind, site_id, ops, received_at)
        if kind == "v2":
            self.ops_accepted += len(ops)
        elif kind == "cdp":
            self.cdp_accepted += len(ops)
        elif kind == "app":
            self.app_accepted += len(ops)
        else:
            self.v1_accepted += len(ops)
        if not self.keep_ops:
            return
        room = self.max_recorded_ops - len(self.records)
        if len(ops) > room:
            self.records_dropped += len(ops) - max(room, 0)
            ops = ops[: max(room, 0)]
        start = len(self.records)
        self.records.extend(
            {
                "seq": seq,
                "index": index,
                "site_id": site_id,
                "kind": kind,
                "op": op,
                "received_at": received_at,
            }
            for index, op in ops
        )
        if site_id is not None and ops:
            self.positions_by_site.setdefault(site_id, []).extend(range(start, len(self.records)))

    def page_records(self, site_id: str | None, after: int, limit: int) -> Page:
        """Recorded ops from cursor `after`, optionally only those sent as `site_id`."""
        positions = None if site_id is None else self.positions_by_site.get(site_id, [])
        return _page(self.records, positions, after, limit)

    def page_requests(self, after: int, limit: int) -> Page:
        """The request log from cursor `after`."""
        return _page(self.requests, None, after, limit)

    def stats(self) -> dict[str, Any]:
        """Counters since start-up or the last reset."""
        return {
            "requests": sum(self.by_status.values()),
            "by_status": dict(self.by_status),
            "ops_accepted": self.ops_accepted,
            "ops_rejected": self.ops_rejected,
            "max_body_bytes": self.max_body_bytes,
            "v1_accepted": self.v1_accepted,
            "cdp_accepted": self.cdp_accepted,
            "app_accepted": self.app_accepted,
            "records_dropped": self.records_dropped,
            "requests_dropped": self.requests_dropped,
        }


class SandboxState:
    """One sandbox's mutable state: live credentials, faults and the recorder."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.faults = Faults()
        self.recorder = Recorder(config.record, config.max_recorded_ops)
        self.credentials = dict(config.credentials)
        self.write_keys = set(config.cdp_write_keys)
        self.app = AppState(config.app_api_keys)
        self.activities = Activities(config.late_failures)
        self.recorder.on_ops = self.activities.observe

    def authenticate_write_key(self, key: str | None) -> bool:
        """Whether `key` is a configured Pipelines write key."""
        return key is not None and any(
            secrets.compare_digest(known.encode(), key.encode()) for known in self.write_keys
        )

    def authenticate(self, site_id: str | None, api_key: str | None) -> bool:
        """Whether (site_id, api_key) is a configured pair."""
        if site_id is None or api_key is None:
            return False
        expected = self.credentials.get(site_id)
        return expected is not None and secrets.compare_digest(expected.encode(), api_key.encode())

    def reset(self) -> None:
        """Back to start-up state: no records, zero counters, no faults, initial credentials."""
        self.recorder.clear()
        self.faults.set(FaultConfig())
        self.credentials = dict(self.config.credentials)
        self.write_keys = set(self.config.cdp_write_keys)
        self.app = AppState(self.config.app_api_keys)
        self.activities = Activities(self.config.late_failures)
        self.recorder.on_ops = self.activities.observe
