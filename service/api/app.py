"""The ingest API as one ASGI application: `create_app(settings)`.

`_dispatch` raises every refusal (no route, no key, a body too large or too slow, a broken
rule, a backlog over its high-water mark, Redis unreachable) and `__call__` answers it through
the one table of `service.web.errors.JSON_ERRORS`. The operator console is a Starlette app
of its own (`service.console.app`), handed every ``/console`` request.
Start-up refuses a Redis that cannot keep the durability promise (`service.store.startup_checks`).
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

from starlette.applications import Starlette

from service.api import openapi
from service.api.admin import Admin
from service.api.late_admin import LateAdmin
from service.config import Settings, Workspace
from service.console.app import create_console
from service.console.overview import Overview
from service.errors import ConfigError, FieldError, InvalidRequest, StoreUnavailable
from service.jobs import Traffic
from service.lanes.registry import ingest_routes
from service.metrics import definitions as metrics
from service.metrics.export import ApiMetrics
from service.metrics.queue_state import QueueStateCollector
from service.store.backpressure import Backpressure
from service.store.connections import AsyncStore, connect_async
from service.store.dead_letter_admin import DeadLetterAdmin
from service.store.forget import Forgetting
from service.store.late_failures import LateFailures
from service.store.queue import Queue
from service.store.startup_checks import StartupGate
from service.store.workspace_control import WorkspaceControl
from service.triggers import Triggers
from service.web import idempotency
from service.web.auth import Authenticator, Producer, key_from_header
from service.web.errors import JSON_ERRORS, ROUTE_SCOPE_KEY
from service.web.http import (
    AsgiBody,
    BodySource,
    Receive,
    Request,
    Response,
    Route,
    Router,
    Scope,
    Send,
    base_url_of,
    decode_body,
    json_response,
    send_response,
    split_path,
)

log = logging.getLogger("cioq.api")

INGEST_KEY_REQUIRED = FieldError(
    "authorization", "required", "a valid ingest key is required (Basic or Bearer)"
)
ADMIN_KEY_REQUIRED = FieldError(
    "authorization", "required", "an admin key is required (CIOQ_ADMIN_KEYS)"
)

READY = json_response(200, {"status": "ready"})


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
        self.auth = Authenticator(settings.workspaces, settings.keys)
        self._own_redis = redis_client is None
        self.redis = redis_client or connect_async(settings.redis)
        self._own_triggers = triggers is None
        self.triggers = triggers or Triggers.for_settings(settings.redis)
        self.queue = Queue(self.redis, settings.redis, settings.queue, self.triggers)
        self.backpressure = Backpressure(
            self.redis, settings.backlog, settings.queue, settings.workspaces
        )
        self.gate = StartupGate(self.redis, settings.redis, self.queue)
        self.forgetting = Forgetting(
            self.redis,
            settings.queue,
            lease_ms=settings.drain.lease_ms,
            triggers=self.triggers,
            enqueue=self.queue.enqueue,
        )
        self.admin = Admin(
            DeadLetterAdmin(self.redis, self.queue),
            settings.workspaces,
            who=self._admin_name,
            forgetting=self.forgetting,
        )
        self.late = LateAdmin(
            LateFailures(self.redis, self.queue), settings.workspaces, who=self._admin_name
        )
        self.metrics = ApiMetrics(
            settings.redis, settings.queue, settings.metrics, settings.workspaces
        )
        self.console = console_for(self, settings)
        self.router = Router(
            [
                Route("GET", ("healthz",), "healthz", self.healthz, auth="public"),
                Route("GET", ("readyz",), "readyz", self.readyz, auth="public"),
                Route("GET", ("openapi.json",), "openapi", self.openapi_json, auth="public"),
                *ingest_routes(self.queue, settings),
                *self.admin.routes(),
                *self.late.routes(),
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
        await send_response(send, await self.respond(scope, AsgiBody(receive)))

    @staticmethod
    def serves_directly(raw_path: bytes) -> bool:
        """Whether the listener may hand a request for `raw_path` to `respond` without
        ASGI (`service.api.direct`): all but ``/metrics`` and the console's pages."""
        return raw_path != b"/metrics" and not raw_path.startswith(b"/console")

    async def respond(self, scope: Scope, body: BodySource) -> Response:
        """The answer to one JSON API request, refusals included; it never raises."""
        started_s = time.perf_counter()
        try:
            response = await self._dispatch(scope, body)
        except Exception as exc:
            response = JSON_ERRORS.response(scope, exc)
        route = scope.get(ROUTE_SCOPE_KEY, "unmatched")
        metrics.observe_ingest(route, response.status, time.perf_counter() - started_s)
        return response

    async def _admit(
        self, workspace: Workspace, headers: dict[bytes, bytes]
    ) -> StoreUnavailable | None:
        """Raises when the request may not go on (a high-water mark; the store unreadable
        for a request without an Idempotency-Key); else the store's error when it was
        unreadable, for only a keyed repeat's remembered answer can be given then."""
        try:
            await self.gate.ensure()
            await self.backpressure.check(workspace.name)
        except StoreUnavailable as exc:
            if headers.get(idempotency.HEADER) is None:
                raise
            log.warning("store unavailable: %s", exc)
            return exc
        return None

    async def _remembered(
        self, workspace: Workspace, request: Request, unreadable: StoreUnavailable
    ) -> Response:
        """A keyed repeat's first answer while the store is unsteady, else the 503."""
        first = await idempotency.remembered(self.redis, workspace, request)
        if first is None:
            raise unreadable
        return first

    def _producer(
        self, authorization: str | None, headers: dict[bytes, bytes]
    ) -> tuple[Producer, Traffic]:
        """The ingest key's producer (and workspace) and the request's traffic class."""
        producer = self.auth.producer(authorization)
        if producer is None:
            raise InvalidRequest([INGEST_KEY_REQUIRED], status=401)
        found = traffic_of(headers.get(TRAFFIC_HEADER), producer.bulk)
        if isinstance(found, FieldError):
            raise InvalidRequest([found])
        return producer, found

    async def _dispatch(self, scope: Scope, source: BodySource) -> Response:
        """The route's answer; every refusal is raised, for `JSON_ERRORS` to answer."""
        method: str = scope["method"]
        segments = split_path(scope.get("raw_path") or scope["path"].encode())
        route, params, path_found = self.router.match(method, segments)
        scope[ROUTE_SCOPE_KEY] = route.name if route else "unmatched"
        if route is None:
            if path_found:
                raise InvalidRequest.of(
                    "path", "method", f"{method} is not allowed here", status=405
                )
            raise InvalidRequest.of("path", "path", "no such route", status=404)
        headers = dict(scope["headers"])
        raw_auth = headers.get(b"authorization")
        authorization = raw_auth.decode("latin-1") if raw_auth is not None else None
        # Keys are checked before the body is read: no stranger makes us read 5 MB.
        workspace = None
        traffic = Traffic.LIVE
        producer = ""
        unreadable = None
        if route.auth == "ingest":
            found, traffic = self._producer(authorization, headers)
            workspace, producer = found.workspace, found.name
            unreadable = await self._admit(workspace, headers)
        elif route.auth == "admin" and not self.auth.is_admin(authorization):
            raise InvalidRequest([ADMIN_KEY_REQUIRED], status=401)
        limit = self.settings.listener.max_request_bytes
        body = await source.read(
            headers, max_bytes=limit, timeout_s=self.settings.listener.body_timeout_s
        )
        encoding = headers.get(b"content-encoding")
        decoded = decode_body(
            body, encoding.decode("latin-1") if encoding else None, max_bytes=limit
        )
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
            producer,
        )
        if unreadable is not None and workspace is not None:
            return await self._remembered(workspace, request, unreadable)
        return await route.handler(request, workspace)

    def _admin_name(self, request: Request) -> str:
        """The caller's admin key's name, for the audit (the route already checked the key)."""
        key = key_from_header(request.header(b"authorization"))
        return (self.auth.admin_name(key) if key else None) or "admin"

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
                # What start-up built (modules, settings, routes, pools) lives as long as
                # the process: frozen, the collector's full passes no longer walk it.
                gc.freeze()
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
            await self.triggers.aclose()


def console_for(app: IngestApp, settings: Settings) -> Starlette:
    """The operator console over the app's Redis, dead-letter admin and scrape client."""
    control = WorkspaceControl(app.redis, settings.queue, app.triggers)
    state = QueueStateCollector(
        settings.queue, settings.metrics, settings.workspaces, app.metrics.redis
    )
    overview = Overview(settings.workspaces, state, app.redis, app.admin.dlq, control)
    return create_console(
        settings, app.auth, app.admin.dlq, control, overview, forgetting=app.forgetting
    )


def create_app(settings: Settings, **kwargs: Any) -> IngestApp:
    """The ingest API for `settings`; tests may inject `redis_client` and `triggers`."""
    return IngestApp(settings, **kwargs)
