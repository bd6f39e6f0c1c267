"""Dead letters: jobs that can never succeed as they are, kept for an operator.

One stream per workspace (`keys.dead_letters`), never trimmed automatically. Each entry
carries the job's payload and kind, why it died (`reason`, `cls`, upstream `status`),
every attempt's time and status, and where it came from (`source` = shard entry id).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson
import redis

from service import keys
from service.errors import StoreUnavailable


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One job leaving the queue for the dead-letter stream."""

    kind: str
    payload: bytes
    source: str
    reason: str
    cls: str
    status: int | None = None
    message: str = ""
    field: str = ""
    attempts: tuple[tuple[int, str], ...] = ()
    accepted_ms: int = 0
    dead_ms: int = 0

    def to_fields(self) -> dict[str, bytes | str | int]:
        return {
            "kind": self.kind,
            "payload": self.payload,
            "source": self.source,
            "reason": self.reason,
            "cls": self.cls,
            "status": "" if self.status is None else self.status,
            "message": self.message,
            "field": self.field,
            "attempts": orjson.dumps([{"at_ms": at, "status": s} for at, s in self.attempts]),
            "accepted_ms": self.accepted_ms,
            "dead_ms": self.dead_ms,
        }


class DeadLetterStore:
    """Writes dead letters; listing, replay and purge build on the same stream."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def add(self, workspace: str, letters: Iterable[DeadLetter]) -> int:
        """Append letters to the workspace's dead-letter stream; returns how many."""
        pipe = self.redis.pipeline(transaction=True)
        count = 0
        for letter in letters:
            pipe.xadd(keys.dead_letters(workspace), letter.to_fields())  # type: ignore[arg-type]
            count += 1
        if count:
            try:
                pipe.execute()
            except redis.RedisError as exc:
                raise StoreUnavailable(f"dead-lettering: {exc}") from exc
        return count
