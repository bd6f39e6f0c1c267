"""The ingest API as one ASGI application: `create_app(settings)`.

Every error leaves through `_dispatch`, which maps cioq's exceptions to HTTP once:
InvalidRequest → its 4xx with field errors; StoreUnavailable → 503 with Retry-After (the
job was not stored, so the producer must retry); Overloaded (a backlog over its
high-water mark, `service.store.backpressure`) → 503 naming the mark; anything else → 500, logged.
Start-up refuses a Redis that cannot keep the durability promise (`service.store.startup_checks`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from service.api import openapi
from service.api.admin import Admin
from service.config import Settings, Workspace
from service.console.routes import Console
from service.errors import ConfigError, FieldError, InvalidRequest, Overloaded, StoreUnavailable
from service.jobs import Traffic
from service.lanes.registry import ingest_routes
from service.metrics import definitions as metrics
from service.metrics.export import ApiMetrics
from service.metrics.overview import Overview
from service.metrics.queue_state import QueueStateCollector
from service.store.backpressure import Backpressure
from service.store.connections import AsyncStore, connect_async
from service.store.dead_letter_admin import DeadLetterAdmin
from service.store.queue import Queue
from service.store.startup_checks import StartupGate
from service.store.workspace_control import WorkspaceControl
from service.triggers import Triggers
from service.web import idempotency
from service.web.auth import Authenticator
from service.web.http import (
    BodyRefused,
    Receive,
    Request,
    Response,
    Route,
    Router,
    Scope,
    Send,
    base_url_of,
    decode_body,
    error_response,
    json_response,
    read_body,
    send_response,
    split_path,
)

log = logging.getLogger("cioq.api")

#: Where `_dispatch` leaves the matched route's name, for the request metrics.
ROUTE_SCOPE_KEY = "cioq.route"

UNAUTHORIZED = error_response(
    401,
    [FieldError("authorization", "required", "a valid ingest key is required (Basic or Bearer)")],
)

STORE_UNAVAILABLE = error_response(
    503,
    [FieldError("store", "unavailable", "the queue is unavailable; retry later")],
    headers=((b"retry-after", b"1"),),
)

READY = json_response(200, {"status": "ready"})

ADMIN_UNAUTHORIZED = error_response(
    401,
    [FieldError("authorization", "required", "an admin key is required (CIOQ_ADMIN_KEYS)")],
)


#: Producers mark a request's jobs as bulk with ``X-Cioq-Traffic: bulk`` (or a bulk key).
TRAFFIC_HEADER = b"x-cioq-traffic"


def traffic_of(header: bytes | None, bulk_key: bool) -> Traffic | FieldError:
    """The request's traffic class: bulk by header or by key, else live."""
    if header is None:
        return Traffic.BULK if bulk_key else Traffic.LIVE
    value = header.decode("latin-1").strip().lower()
    if value not in ("live", "bulk"):
        return FieldError("X-Cioq-Traffic", "enum", "X-Cioq-Traffic must be live or bulk")
    # A bulk key cannot be lifted to live by a header: its owner chose bulk for it.
    return Traffic.BULK if bulk_key else Traffic(value)


class IngestApp:
    """ASGI app: routing, auth, body cap, error mapping, lifespan of Redis and Celery."""

    def __init__(
        self,
        settings: Settings,
        *,
        redis_client: AsyncStore | None = None,
        triggers: Triggers | None = None,
    ) -> None:
        self.settings = settings
        self.auth = Authenticator(settings)
        self._own_redis = redis_client is None
        self.redis = redis_client or connect_async(settings)
        self._own_triggers = triggers is None
        self.triggers = triggers or Triggers.for_settings(settings)
        self.queue = Queue(self.redis, settings, self.triggers)
        self.backpressure = Backpressure(self.redis, settings)
        self.gate = StartupGate(self.redis, settings, self.queue)
        self.admin = Admin(DeadLetterAdmin(self.redis, self.queue), settings)
        self.metrics = ApiMetrics(settings)
        self.console = console_for(self, settings)
        self.router = Router(
            [
                Route("GET", ("healthz",), "healthz", self.healthz, auth="public"),
                Route("GET", ("readyz",), "readyz", self.readyz, auth="public"),
                Route("GET", ("openapi.json",), "openapi", self.openapi_json, auth="public"),
                *ingest_routes(self.queue, settings),
                *self.admin.routes(),
            ]
        )
        self._openapi = json_response(200, openapi.document(self.router.routes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics" and scope["method"] == "GET":
            await self.metrics.serve(send)
            return
        if scope["path"] == "/console" or scope["path"].startswith("/console/"):
            await self.console(scope, receive, send)  # HTML pages, outside the JSON API
            return
        started_s = time.perf_counter()
        response = await self._dispatch(scope, receive)
        route = scope.get(ROUTE_SCOPE_KEY, "unmatched")
        metrics.observe_ingest(route, response.status, time.perf_counter() - started_s)
        await send_response(send, response)

    async def _admit(self, workspace: Workspace, headers: dict[bytes, bytes]) -> Response | bool:
        """The 503 for a request that may not go on (a high-water mark, or the store
        unreadable for a request without an Idempotency-Key); else whether the store was
        unreadable (then only a keyed repeat's remembered answer can be given)."""
        try:
            await self.gate.ensure()
            await self.backpressure.check(workspace.name)
        except Overloaded as exc:
            retry_after = str(exc.retry_after_s).encode()
            return error_response(503, [exc.mark], headers=((b"retry-after", retry_after),))
        except StoreUnavailable as exc:
            log.warning("store unavailable: %s", exc)
            if headers.get(idempotency.HEADER) is None:
                return STORE_UNAVAILABLE
            return True
        return False

    async def _remembered(self, workspace: Workspace, request: Request) -> Response:
        """A keyed repeat's first answer while the store is unsteady, else the 503."""
        try:
            first = await idempotency.remembered(self.redis, workspace, request)
        except InvalidRequest as exc:
            return error_response(exc.status, exc.errors)
        return STORE_UNAVAILABLE if first is None else first

    async def _dispatch(self, scope: Scope, receive: Receive) -> Response:
        method: str = scope["method"]
        segments = split_path(scope.get("raw_path") or scope["path"].encode())
        route, params, path_found = self.router.match(method, segments)
        scope[ROUTE_SCOPE_KEY] = route.name if route else "unmatched"
        if route is None:
            status = 405 if path_found else 404
            rule = "method" if path_found else "path"
            text = f"{method} is not allowed here" if path_found else "no such route"
            return error_response(status, [FieldError("path", rule, text)])
        headers = dict(scope["headers"])
        raw_auth = headers.get(b"authorization")
        authorization = raw_auth.decode("latin-1") if raw_auth is not None else None
        # Keys are checked before the body is read: no stranger makes us read 5 MB.
        workspace = None
        traffic = Traffic.LIVE
        gate_failed = False
        if route.auth == "ingest":
            workspace = self.auth.workspace(authorization)
            if workspace is None:
                return UNAUTHORIZED
            found = traffic_of(headers.get(TRAFFIC_HEADER), self.auth.is_bulk_key(authorization))
            if isinstance(found, FieldError):
                return error_response(400, [found])
            traffic = found
            refused = await self._admit(workspace, headers)
            if isinstance(refused, Response):
                return refused
            # The gate could not read the store: a keyed repeat may still be answered.
            gate_failed = refused
        elif route.auth == "admin" and not self.auth.is_admin(authorization):
            return ADMIN_UNAUTHORIZED
        limit = self.settings.max_request_bytes
        try:
            body = await read_body(
                receive, headers, max_bytes=limit, timeout_s=self.settings.body_timeout_s
            )
        except BodyRefused as exc:
            return self._body_refused(exc.status)
        encoding = headers.get(b"content-encoding")
        try:
            decoded = decode_body(
                body, encoding.decode("latin-1") if encoding else None, max_bytes=limit
            )
        except InvalidRequest as exc:
            return error_response(exc.status, exc.errors)
        if decoded is None:
            return self._body_refused(413)
        request = Request(
            method,
            segments,
            scope.get("query_string", b"").decode("latin-1"),
            headers,
            decoded,
            params,
            route.name,
            base_url_of(scope),
            traffic,
        )
        if gate_failed and workspace is not None:
            return await self._remembered(workspace, request)
        try:
            return await route.handler(request, workspace)
        except InvalidRequest as exc:
            return error_response(exc.status, exc.errors)
        except StoreUnavailable as exc:
            log.warning("store unavailable: %s", exc)
            return STORE_UNAVAILABLE
        except Exception:
            log.exception("unexpected error on %s %s", method, route.name)
            return error_response(500, [FieldError("server", "internal", "internal error")])

    def _body_refused(self, status: int) -> Response:
        """413 or 408, closing the connection: the rest of the body is not worth reading."""
        if status == 413:
            limit = self.settings.max_request_bytes
            error = FieldError("body", "max_bytes", f"request body over {limit} bytes", limit)
        else:
            deadline = self.settings.body_timeout_s
            error = FieldError("body", "timeout", f"request body not received in {deadline} s")
        return error_response(status, [error], headers=((b"connection", b"close"),))

    async def healthz(self, request: Request, workspace: Any) -> Response:
        return json_response(200, {"status": "ok"})

    async def openapi_json(self, request: Request, workspace: Any) -> Response:
        return self._openapi

    async def readyz(self, request: Request, workspace: Any) -> Response:
        # Process-local on purpose: Redis is shared by every api pod, so a readiness that
        # followed it would empty the Service on a Redis blip, and producers would get
        # connection errors instead of ingest's own 503 + Retry-After.
        return READY

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.gate.startup()
                except ConfigError as exc:
                    log.error("refusing to start: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        # A lane's handlers may hold upstream connections (the App API read proxy).
        owners = {
            id(o): o for r in self.router.routes if (o := getattr(r.handler, "__self__", None))
        }
        for owner in owners.values():
            if hasattr(owner, "aclose") and owner is not self:
                await owner.aclose()
        self.metrics.close()
        await self.queue.aclose()
        if self._own_redis:
            await self.redis.aclose()
        if self._own_triggers:
            self.triggers.close()


def console_for(app: IngestApp, settings: Settings) -> Console:
    """The operator console over the app's Redis, dead-letter admin and scrape client."""
    control = WorkspaceControl(app.redis, settings, app.triggers)
    state = QueueStateCollector(settings, app.metrics.redis)
    overview = Overview(settings, state, app.redis, app.admin.dlq, control)
    return Console(settings, app.auth, app.admin.dlq, control, overview)


def create_app(settings: Settings, **kwargs: Any) -> IngestApp:
    """The ingest API for `settings`; tests may inject `redis_client` and `triggers`."""
    return IngestApp(settings, **kwargs)
