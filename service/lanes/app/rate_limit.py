"""Cluster-wide token buckets for the App API's rate limits, one Lua call per reservation.

Customer.io limits App API calls per workspace (reference `cdp-and-app-api.md` §2.2, §3):
100 requests/s for the ``/v1/send/*`` endpoints, 10/s for the other App API calls, and one
trigger per broadcast every 10 s. Every worker process and pod sends from the same budget
because the budget lives in Redis (``lua/token_bucket.lua``, GCRA on Redis's own clock).

A reservation is a slot in time: the caller is told how long to wait and then sends, so
concurrent drains queue up in order instead of racing for a token. Slots are spaced by
``1 / (limit * headroom)`` with a burst of one, so the grant times never put more than
``headroom * limit`` calls in any second; the headroom absorbs the jitter between a grant
and the request's arrival at Customer.io.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from service import keys
from service.config import AppLaneSettings
from service.store.connections import load_script, store_errors


class LimitClass(StrEnum):
    """Customer.io's App API rate-limit classes."""

    SEND = "send"
    APP = "app"
    BROADCAST = "broadcast"


@dataclass(frozen=True, slots=True)
class Limit:
    """One class's spacing between slots, and how many slots may be taken at once."""

    interval_us: int
    burst: int = 1


def limit_for(limit_class: LimitClass, app: AppLaneSettings) -> Limit:
    """The spacing a class's bucket enforces under `settings`."""
    headroom = app.app_rate_headroom
    if limit_class is LimitClass.SEND:
        return Limit(round(1_000_000 / (app.app_send_rps * headroom)))
    if limit_class is LimitClass.APP:
        return Limit(round(1_000_000 / (app.app_rps * headroom)))
    return Limit(round(app.app_broadcast_interval_s * 1_000_000 / headroom))


@dataclass(frozen=True, slots=True)
class Reservation:
    """``granted``: send after ``wait_s``. Otherwise nothing was reserved and no slot is
    free for ``wait_s`` beyond the caller's maximum wait."""

    granted: bool
    wait_s: float


def _reservation(raw: Any) -> Reservation:
    value = int(raw)
    return Reservation(value >= 0, abs(value) / 1_000_000)


class _Buckets:
    def __init__(self, client: Any, app: AppLaneSettings) -> None:
        self.app = app
        self._script = load_script(client, "token_bucket")

    def _call(
        self, workspace: str, limit_class: LimitClass, name: str, max_wait_ms: int, hold_ms: int
    ) -> Any:
        lua_keys, args = self._args(workspace, limit_class, name, max_wait_ms, hold_ms)
        with store_errors("rate bucket"):
            return self._script(keys=lua_keys, args=args)

    def _args(
        self, workspace: str, limit_class: LimitClass, name: str, max_wait_ms: int, hold_ms: int
    ) -> tuple[list[str], list[int]]:
        limit = limit_for(limit_class, self.app)
        args: list[int] = [limit.interval_us, limit.burst, max_wait_ms * 1000]
        if hold_ms:
            args.append(hold_ms * 1000)
        return [keys.rate_bucket(workspace, limit_class, name)], args


class RateLimiter(_Buckets):
    """Reservations for the workers (sync Redis client)."""

    def reserve(
        self, workspace: str, limit_class: LimitClass, *, name: str = "", max_wait_ms: int
    ) -> Reservation:
        """Reserve the next slot if it starts within `max_wait_ms`."""
        return _reservation(self._call(workspace, limit_class, name, max_wait_ms, 0))

    def hold(
        self, workspace: str, limit_class: LimitClass, *, name: str = "", hold_ms: int
    ) -> None:
        """Let no process send in this class before `hold_ms` from now (an upstream 429)."""
        self._call(workspace, limit_class, name, 0, max(hold_ms, 1))

    def queue_reserve(
        self, pipe: Any, workspace: str, limit_class: LimitClass, *, name: str, max_wait_ms: int
    ) -> None:
        """`reserve`, queued on a pipeline by sha (`reservation` reads its reply)."""
        lua_keys, args = self._args(workspace, limit_class, name, max_wait_ms, 0)
        pipe.evalsha(self._script.sha, len(lua_keys), *lua_keys, *args)


def reservation(reply: Any) -> Reservation | None:
    """A pipelined `reserve`'s reply as a reservation, or None when it failed."""
    return None if isinstance(reply, Exception) else _reservation(reply)


class AsyncRateLimiter(_Buckets):
    """Reservations for the ingest API's read proxy (asyncio Redis client)."""

    async def reserve(
        self, workspace: str, limit_class: LimitClass, *, name: str = "", max_wait_ms: int
    ) -> Reservation:
        with store_errors("rate bucket"):
            return _reservation(await self._call(workspace, limit_class, name, max_wait_ms, 0))

    async def hold(
        self, workspace: str, limit_class: LimitClass, *, name: str = "", hold_ms: int
    ) -> None:
        with store_errors("rate bucket"):
            await self._call(workspace, limit_class, name, 0, max(hold_ms, 1))
