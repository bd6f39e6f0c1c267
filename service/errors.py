"""The exceptions cioq raises, split on what the caller must do about them.

    CioqError
    ├── ConfigError            settings are wrong: refuse to start
    ├── PermanentError         trying again as it is cannot help
    │   └── InvalidRequest         a request breaks a rule: 4xx, nothing of it is queued
    ├── RetryableError         try again later; nothing is lost
    │   ├── StoreUnavailable   Redis is unreachable, read-only or out of memory
    │   └── Overloaded         a workspace's backlog is over a high-water mark
    └── LeaseLost              another drain holds the shard now: stop touching it

Customer.io's answers are values, not exceptions (`service.delivery.outcomes.Outcome`):
a failed request is an outcome the drain's policies act on. Third-party exceptions are
translated in one place each: redis-py's by `service.store.connections.store_errors`,
httpx's in `service.delivery.upstream`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class CioqError(Exception):
    """Base of every exception cioq raises on purpose."""


class ConfigError(CioqError):
    """Raised when settings are missing, malformed or unsafe for the environment."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One broken rule in a producer's request, as shown in a 400 body."""

    field: str
    rule: str
    message: str
    limit: int | str | None = None
    actual: int | str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "rule": self.rule, "message": self.message}
        if self.limit is not None:
            out["limit"] = self.limit
        if self.actual is not None:
            out["actual"] = self.actual
        return out


class PermanentError(CioqError):
    """Raised when an operation can never succeed as it is."""


@dataclass
class InvalidRequest(PermanentError):
    """Raised when a producer's request breaks one or more rules; nothing of it is queued."""

    errors: list[FieldError] = field(default_factory=list)
    status: int = 400

    @classmethod
    def of(cls, field: str, rule: str, message: str, *, status: int = 400) -> InvalidRequest:
        """The common case: one rule broken by one field."""
        return cls([FieldError(field, rule, message)], status)

    def __str__(self) -> str:
        return "; ".join(f"{e.field}: {e.message}" for e in self.errors)


class RetryableError(CioqError):
    """Raised when an operation failed in a way that may succeed if tried again."""


class StoreUnavailable(RetryableError):
    """Raised when Redis cannot take or give data right now."""


class ShardsBusy(StoreUnavailable):
    """Raised when forget could not take some shards' leases in time (a drain kept them,
    or a dead worker's lease has not expired yet): retry; what was done stays done."""


class StoredUnconfirmed(StoreUnavailable):
    """The write was applied, but not confirmed at the durability level in time (WAIT,
    WAITAOF): the job is queued and will be sent, though a failover may still lose it."""

    def __init__(self, message: str, *, reply: Any = None, earlier: bytes | None = None) -> None:
        super().__init__(message)
        #: The script's reply (per part), or the first try's marker value (per request).
        self.reply = reply
        self.earlier = earlier
        #: The answer an earlier try of the request gave, to give again (set by ingest).
        self.answer: Any = None


@dataclass
class Overloaded(RetryableError):
    """Raised when a workspace's backlog is over a high-water mark; ingest answers 503."""

    mark: FieldError
    retry_after_s: int

    def __str__(self) -> str:
        return self.mark.message


class LeaseLost(CioqError):
    """Raised when a shard's lease expired or was taken over: the drain must stop."""
