"""The sandbox Customer.io as an ASGI app: Track, Pipelines and App API endpoints, `/_sandbox/`
controls.

Every Track API request goes through `_Sandbox.customerio`, which numbers it, applies the injected
faults, checks Basic auth where Customer.io does, runs the endpoint and logs the answer. The
`/api/v2/batch` path is the hot one: one `orjson.loads`, one pass of cheap checks per op.
"""

from __future__ import annotations

import asyncio
import binascii
import time
from base64 import b64decode
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.app_api import app_routes
from sandbox.controls import Controls, Endpoint, control, json_response
from sandbox.pipelines import pipelines_routes
from sandbox.rules import (
    OpError,
    check_form,
    check_op,
    check_segment_ids,
    check_v1_event,
)
from sandbox.state import SandboxConfig, SandboxState

__all__ = ["create_sandbox_app"]


@dataclass(slots=True)
class Call:
    """One Track API request as it is being answered."""

    request: Request
    seq: int
    site_id: str | None
    received_at: float
    body_bytes: int
    op_count: int = 0


Handler = Callable[[Call], Awaitable[Response]]
BodyCheck = Callable[[Any], str | None]


def _json(status: int, doc: Any, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, doc, headers)


def _v1_error(status: int, message: str) -> Response:
    return _json(status, {"meta": {"error": message}})


def _v2_error(status: int, field: str, message: str, reason: str = "invalid") -> Response:
    return _json(status, {"errors": [{"reason": reason, "field": field, "message": message}]})


def _basic_credentials(header: str | None) -> tuple[str | None, str | None]:
    if header is None or header[:6].lower() != "basic ":
        return None, None
    try:
        site_id, sep, api_key = b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    return (site_id, api_key) if sep else (None, None)


def _declared_bytes(request: Request) -> int:
    declared = request.headers.get("content-length", "")
    return int(declared) if declared.isdigit() else 0


async def _read_body(call: Call, max_bytes: int) -> bytes | None:
    """The request body, or None once it is known to exceed `max_bytes`."""
    if call.body_bytes > max_bytes:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in call.request.stream():
        size += len(chunk)
        if size > max_bytes:
            call.body_bytes = size
            return None
        chunks.append(chunk)
    call.body_bytes = size
    return b"".join(chunks)


def _poison(op: dict[str, Any]) -> object:
    attributes = op.get("attributes")
    return attributes.get("sandbox_poison") if type(attributes) is dict else None


_POISON_FIELD = "attributes.sandbox_poison"


class _Sandbox:
    """Endpoint implementations bound to one `SandboxState`."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.config = state.config
        self.recorder = state.recorder

    def customerio(self, handler: Handler, *, auth: bool = True) -> Endpoint:
        """Wrap a Track API handler with numbering, faults, auth and the request log."""

        async def endpoint(request: Request) -> Response:
            site_id, api_key = _basic_credentials(request.headers.get("authorization"))
            call = Call(
                request, self.recorder.next_seq(), site_id, time.time(), _declared_bytes(request)
            )
            # Decided on arrival, so a status_sequence is consumed in arrival order.
            injection = self.state.faults.on_request(site_id)
            if injection.latency_s:
                await asyncio.sleep(injection.latency_s)
            if injection.status is not None:
                headers = {"Retry-After": injection.retry_after} if injection.retry_after else None
                error = {"meta": {"error": f"sandbox fault {injection.status}"}}
                response = _json(injection.status, error, headers)
            elif auth and not self.state.authenticate(site_id, api_key):
                response = _json(401, {"meta": {"error": "Unauthorized request"}})
            else:
                response = await handler(call)
            self.recorder.log_request(
                {
                    "seq": call.seq,
                    "method": request.method,
                    "path": request.url.path,
                    "site_id": site_id,
                    "status": response.status_code,
                    "body_bytes": call.body_bytes,
                    "op_count": call.op_count,
                    "received_at": call.received_at,
                }
            )
            return response

        return endpoint

    async def batch(self, call: Call) -> Response:
        """`POST /api/v2/batch`: validate each op, keep the valid ones, 200 or 207."""
        body = await _read_body(call, self.config.max_body_bytes)
        if body is None:
            limit = self.config.max_body_bytes
            return _v2_error(413, "batch", f"request body exceeds {limit} bytes", "too_large")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _v2_error(400, "batch", "request body is not valid JSON")
        batch = doc.get("batch") if type(doc) is dict else None
        if type(batch) is not list or not batch:
            return _v2_error(400, "batch", "batch must be a non-empty list of operations")
        call.op_count = len(batch)
        max_op_bytes = self.config.max_op_bytes
        errors: list[dict[str, Any]] = []
        accepted: list[tuple[int, Any]] = []
        hang = False
        for index, op in enumerate(batch):
            error: OpError | None = check_op(op, max_op_bytes)
            if error is None:
                poison = _poison(op) if self.state.faults.config.poison else None
                if poison == "400":
                    self.recorder.ops_rejected += len(batch)
                    return _v2_error(400, _POISON_FIELD, f"sandbox_poison at batch index {index}")
                if poison == "207":
                    error = {"reason": "invalid", "field": _POISON_FIELD, "message": "poisoned"}
                hang = hang or poison == "hang"
            if error is None:
                accepted.append((index, op))
            else:
                errors.append({"batch_index": index, **error})
        self.recorder.ops_rejected += len(errors)
        self.recorder.record_ops("v2", call.seq, call.site_id, accepted, call.received_at)
        if hang:
            await asyncio.sleep(self.state.faults.config.hang_s)
        return _json(207, {"errors": errors}) if errors else _json(200, {})

    async def entity(self, call: Call) -> Response:
        """`POST /api/v2/entity`: one op as the whole body, 200 or 400."""
        body = await _read_body(call, self.config.max_op_bytes)
        if body is None:
            limit = self.config.max_op_bytes
            return _v2_error(413, "op", f"request body exceeds {limit} bytes", "too_large")
        try:
            op = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _v2_error(400, "op", "request body is not valid JSON")
        call.op_count = 1
        error = check_op(op, self.config.max_op_bytes)
        poison = _poison(op) if error is None and self.state.faults.config.poison else None
        if error is None and (poison == "400" or poison == "207"):
            error = {"reason": "invalid", "field": _POISON_FIELD, "message": "poisoned"}
        if error is not None:
            self.recorder.ops_rejected += 1
            return _json(400, {"errors": [error]})
        self.recorder.record_ops("v2", call.seq, call.site_id, [(0, op)], call.received_at)
        if poison == "hang":
            await asyncio.sleep(self.state.faults.config.hang_s)
        return _json(200, {})

    def v1(
        self, check: BodyCheck | None = None, *, no_content: bool = False, json_only: bool = False
    ) -> Handler:
        """A v1 endpoint that records each accepted call as {method, path, query, body}.

        `check` names what is wrong with the decoded body; `json_only` refuses bodies not sent
        as application/json (Customer.io documents this for /unsubscribe).
        """

        async def handle(call: Call) -> Response:
            request = call.request
            if json_only and not request.headers.get("content-type", "").startswith(
                "application/json"
            ):
                return _v1_error(400, "Content-Type must be application/json")
            body = await _read_body(call, self.config.max_body_bytes)
            if body is None:
                return _v1_error(413, f"request body exceeds {self.config.max_body_bytes} bytes")
            try:
                doc = orjson.loads(body) if body.strip() else None
            except orjson.JSONDecodeError:
                return _v1_error(400, "request body is not valid JSON")
            call.op_count = 1
            problem = check(doc) if check is not None else None
            if problem is not None:
                self.recorder.ops_rejected += 1
                return _v1_error(400, problem)
            record = {
                "method": request.method,
                "path": request.url.path,
                "query": dict(request.query_params),
                "body": doc,
            }
            self.recorder.record_ops("v1", call.seq, call.site_id, [(0, record)], call.received_at)
            return Response(status_code=204) if no_content else _json(200, {})

        return handle

    async def region(self, call: Call) -> Response:
        """`GET /api/v1/accounts/region`: this server stands in for the US region."""
        url = str(call.request.base_url).rstrip("/")
        return _json(200, {"url": url, "region": "us", "environment_id": 1})


async def _healthz(request: Request) -> Response:
    return _json(200, {})


class RawPathRouting:
    """Route on the path as sent, so that `a%2Fb` stays one path segment.

    The official SDKs percent-encode `/` inside identifiers; decoding before routing would
    split such an identifier into two segments and answer 404.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path = scope.get("raw_path") if scope["type"] == "http" else None
        if raw_path:
            scope = {**scope, "path": raw_path.decode("latin-1")}
        await self.app(scope, receive, send)


def create_sandbox_app(config: SandboxConfig | None = None) -> Starlette:
    """Build a sandbox Customer.io; its `SandboxState` is at `app.state.sandbox`."""
    state = SandboxState(config or SandboxConfig())
    sandbox = _Sandbox(state)
    controls = Controls(state)
    person = "/api/v1/customers/{identifier}"
    # (method, path, handler, Basic auth required) for every Track API endpoint served.
    track_api: list[tuple[str, str, Handler, bool]] = [
        ("POST", "/api/v2/batch", sandbox.batch, True),
        ("POST", "/api/v2/entity", sandbox.entity, True),
        ("POST", "/api/v1/segments/{id}/add_customers", sandbox.v1(check_segment_ids), True),
        ("POST", "/api/v1/segments/{id}/remove_customers", sandbox.v1(check_segment_ids), True),
        ("POST", "/api/v1/forms/{id}/submit", sandbox.v1(check_form, no_content=True), True),
        ("POST", "/unsubscribe/{delivery_id}", sandbox.v1(json_only=True), False),
        ("POST", "/api/v1/metrics", sandbox.v1(), False),
        ("POST", "/api/v1/push/events", sandbox.v1(), False),
        ("POST", "/api/v1/events", sandbox.v1(check_v1_event), True),
        ("GET", "/api/v1/accounts/region", sandbox.region, True),
        ("PUT", person, sandbox.v1(), True),
        ("DELETE", person, sandbox.v1(), True),
        ("POST", f"{person}/events", sandbox.v1(check_v1_event), True),
        ("PUT", f"{person}/devices", sandbox.v1(), True),
        ("DELETE", f"{person}/devices/{{device_id}}", sandbox.v1(), True),
        ("POST", f"{person}/suppress", sandbox.v1(), True),
        ("POST", f"{person}/unsuppress", sandbox.v1(), True),
        ("POST", "/api/v1/merge_customers", sandbox.v1(), True),
    ]
    controls_api: list[tuple[str, str, Callable[[Request], Awaitable[Any]]]] = [
        ("GET", "/_sandbox/received", controls.received),
        ("GET", "/_sandbox/requests", controls.requests),
        ("GET", "/_sandbox/stats", controls.stats),
        ("POST", "/_sandbox/reset", controls.reset),
        ("POST", "/_sandbox/credentials", controls.credentials),
        ("POST", "/_sandbox/faults", controls.set_faults),
        ("GET", "/_sandbox/faults", controls.get_faults),
    ]
    routes = [
        Route(path, sandbox.customerio(handler, auth=auth), methods=[method])
        for method, path, handler, auth in track_api
    ]
    routes += pipelines_routes(state)
    routes += app_routes(state)
    routes += [Route(path, control(handler), methods=[m]) for m, path, handler in controls_api]
    routes.append(Route("/healthz", _healthz, methods=["GET"]))
    app = Starlette(routes=routes, middleware=[Middleware(RawPathRouting)])
    app.state.sandbox = state
    return app
