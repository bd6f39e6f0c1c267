"""App API reads, proxied synchronously with the workspace's App API key.

Reads are request/response by nature, so they are not queued: each takes a slot of the
workspace's cluster-wide 10/s App API budget (waiting at most ``CIOQ_APP_READ_WAIT_MS``,
else 429 with ``Retry-After``), goes to Customer.io, and Customer.io's status and body
come back unchanged. Producers no longer need the App API key. Nothing is cached: a
read's freshness is Customer.io's, not cioq's. The few writes among these paths (create a
manual segment, a collection, an export) are forwarded the same way, once; an ambiguous
failure is answered 502/504 and left to the producer, as if it had called Customer.io.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from service.config import AppLaneSettings, Workspace
from service.delivery.outcomes import Transport
from service.errors import FieldError
from service.lanes.app.client import AppProxy
from service.lanes.app.rate_limit import AsyncRateLimiter, LimitClass
from service.store.connections import AsyncStore
from service.web.auth import require_lane_key
from service.web.http import Request, Response, Route, error_response

#: (method, path under /v1) of every read served; ``{x}`` is a path parameter.
READS: tuple[tuple[str, str], ...] = (
    ("GET", "customers"),
    ("POST", "customers"),
    ("POST", "customers/attributes"),
    ("GET", "customers/{id}/attributes"),
    ("GET", "customers/{id}/segments"),
    ("GET", "customers/{id}/messages"),
    ("GET", "customers/{id}/activities"),
    ("GET", "customers/{id}/relationships"),
    ("GET", "segments"),
    ("POST", "segments"),
    ("GET", "segments/{id}"),
    ("GET", "segments/{id}/membership"),
    ("GET", "segments/{id}/customer_count"),
    ("GET", "campaigns"),
    ("GET", "campaigns/{id}"),
    ("GET", "campaigns/{id}/metrics"),
    ("GET", "campaigns/{id}/actions"),
    ("GET", "campaigns/{id}/triggers/{trigger_id}"),
    ("GET", "campaigns/{id}/triggers/{trigger_id}/errors"),
    ("GET", "messages"),
    ("GET", "messages/{id}"),
    ("GET", "exports"),
    ("POST", "exports/customers"),
    ("POST", "exports/deliveries"),
    ("GET", "exports/{id}"),
    ("GET", "exports/{id}/download"),
    ("GET", "collections"),
    ("POST", "collections"),
    ("GET", "collections/{id}"),
    ("GET", "collections/{id}/content"),
)
_DEFAULT_HOLD_MS = 1000


def require_app_key(ws: Workspace) -> None:
    """A workspace without an App API key refuses App API calls it could never make."""
    require_lane_key(
        ws, ws.app_api_key, field="app_api_key", key_name="App API key", calls="App API calls"
    )


class AppReads:
    """The read proxy: one `AppProxy` per workspace, one shared budget per workspace."""

    def __init__(self, client: AsyncStore, app: AppLaneSettings, *, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.limiter = AsyncRateLimiter(client, app)
        self._proxies: dict[str, AppProxy] = {}

    def routes(self) -> list[Route]:
        return [
            Route(method, ("v1", *path.split("/")), f"app.read.{method.lower()}.{path}", self.read)
            for method, path in READS
        ]

    def _proxy(self, ws: Workspace) -> AppProxy:
        proxy = self._proxies.get(ws.name)
        if proxy is None:
            proxy = AppProxy(ws, timeout_s=self.timeout_s)
            self._proxies[ws.name] = proxy
        return proxy

    async def read(self, req: Request, ws: Workspace) -> Response:
        """Forward once a slot is free; a 429 from Customer.io (it did nothing) holds the
        workspace's budget and is tried once more if the wait still fits the read's."""
        require_app_key(ws)
        deadline_s = time.monotonic() + self.app.app_read_wait_ms / 1000
        url = req.raw_path + (f"?{req.query}" if req.query else "")
        for attempt in range(2):
            left_ms = max(int((deadline_s - time.monotonic()) * 1000), 0)
            slot = await self.limiter.reserve(ws.name, LimitClass.APP, max_wait_ms=left_ms)
            if not slot.granted:
                if attempt:  # the answer we have is Customer.io's own 429
                    break
                return self._over_budget(slot.wait_s)
            if slot.wait_s:
                await asyncio.sleep(slot.wait_s)
            answer = await self._proxy(ws).forward(
                req.method, url, req.body, req.header(b"content-type")
            )
            if answer.status != 429:
                break
            hold_s = answer.retry_after_s or _DEFAULT_HOLD_MS / 1000
            await self.limiter.hold(ws.name, LimitClass.APP, hold_ms=int(hold_s * 1000))
        if answer.status is None:
            status = 504 if answer.transport is Transport.READ_TIMEOUT else 502
            return error_response(
                status, [FieldError("upstream", str(answer.transport), answer.detail)]
            )
        return Response(answer.status, answer.body, _passed_headers(answer))

    def _over_budget(self, wait_s: float) -> Response:
        return error_response(
            429,
            [
                FieldError(
                    "rate_limit",
                    "app_rps",
                    f"the workspace's App API budget ({self.app.app_rps}/s) is spent",
                )
            ],
            headers=((b"retry-after", str(max(1, math.ceil(wait_s))).encode()),),
        )

    async def aclose(self) -> None:
        for proxy in self._proxies.values():
            await proxy.aclose()


def _passed_headers(answer: Any) -> tuple[tuple[bytes, bytes], ...]:
    if answer.retry_after_s is not None:
        return ((b"retry-after", str(math.ceil(answer.retry_after_s)).encode()),)
    return ()
