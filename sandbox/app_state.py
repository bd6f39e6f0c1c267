"""What the sandbox's App API remembers: keys, rate windows, sends per person, faults.

The App API faults differ from the Track ones in *when* they strike: a hang or a reset
happens after the send was recorded (Customer.io acted; the client cannot know), which
is the ambiguous case a queue must never resend; an error status happens before.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["AppFaultConfig", "AppState", "RateWindows"]

Fault = Literal["hang", "reset", "reset_before", "status", "none"]


@dataclass(frozen=True)
class AppFaultConfig:
    """App API fault settings, as posted to ``/_sandbox/app_faults``; rates add up to ≤ 1."""

    #: Record the send, then answer only after `hang_s` (past the client's timeout).
    hang_rate: float = 0.0
    #: Record the send, then reset the connection instead of answering.
    reset_rate: float = 0.0
    #: Reset the connection without recording (the client cannot tell this from the above).
    reset_before_rate: float = 0.0
    #: Answer `error_status` without recording, with `Retry-After` when `retry_after_s` is set.
    error_rate: float = 0.0
    error_status: int = 503
    retry_after_s: float | None = None
    hang_s: float = 30.0
    seed: int | None = None

    @classmethod
    def from_json(cls, doc: object) -> AppFaultConfig:
        if type(doc) is not dict:
            raise ValueError("app faults must be a JSON object")
        unknown = doc.keys() - cls.__dataclass_fields__.keys()
        if unknown:
            raise ValueError(f"unknown app fault settings: {sorted(unknown)}")
        rates = {}
        for name in ("hang_rate", "reset_rate", "reset_before_rate", "error_rate"):
            value = doc.get(name, 0.0)
            if type(value) not in (int, float) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number between 0 and 1")
            rates[name] = float(value)
        if sum(rates.values()) > 1:
            raise ValueError("the fault rates must add up to at most 1")
        status = doc.get("error_status", 503)
        if type(status) is not int or not 400 <= status <= 599:
            raise ValueError("error_status must be an HTTP error status (400..599)")
        retry_after = doc.get("retry_after_s")
        if retry_after is not None and (type(retry_after) not in (int, float) or retry_after < 0):
            raise ValueError("retry_after_s must be a number ≥ 0 or null")
        hang_s = doc.get("hang_s", 30.0)
        if type(hang_s) not in (int, float) or hang_s < 0:
            raise ValueError("hang_s must be a number ≥ 0")
        seed = doc.get("seed")
        if seed is not None and type(seed) is not int:
            raise ValueError("seed must be an integer or null")
        return cls(
            **rates,
            error_status=status,
            retry_after_s=None if retry_after is None else float(retry_after),
            hang_s=float(hang_s),
            seed=seed,
        )

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class RateWindows:
    """Customer.io's App API limits as sliding windows per (key, class or broadcast)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], deque[float]] = {}

    def admit(self, key: str, limit_class: str, limit: int, window_s: float, now: float) -> bool:
        """Count a request at `now` unless `limit` were already seen within `window_s`."""
        seen = self._seen.setdefault((key, limit_class), deque())
        while seen and seen[0] <= now - window_s:
            seen.popleft()
        if len(seen) >= limit:
            return False
        seen.append(now)
        return True


class AppState:
    """Mutable App API state; `SandboxState.reset` replaces it."""

    def __init__(self, keys: frozenset[str]) -> None:
        self.keys = set(keys)
        self.windows = RateWindows()
        #: Every recorded send and trigger, per person identifier ("id:<v>", "email:<v>").
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.next_trigger_id = 1
        self.set_faults(AppFaultConfig())

    def set_faults(self, config: AppFaultConfig) -> None:
        self.faults = config
        self._rng = random.Random(config.seed)

    def draw(self) -> Fault:
        """The fault for the send arriving now."""
        f = self.faults
        roll = self._rng.random()
        for fault, rate in (
            ("hang", f.hang_rate),
            ("reset", f.reset_rate),
            ("reset_before", f.reset_before_rate),
            ("status", f.error_rate),
        ):
            if roll < rate:
                return fault  # type: ignore[return-value]
            roll -= rate
        return "none"
