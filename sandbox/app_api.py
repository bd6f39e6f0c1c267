"""The sandbox's App API: transactional sends, broadcast triggers (also the seed's alias), reads.

Customer.io's documented behaviour (reference `cdp-and-app-api.md` §2 to §4): Bearer App
API key; ``POST /v1/send/<kind>`` answers ``200 {delivery_id, queued_at}`` or 400
``{"meta":{"error"}}``; ``POST /v1/campaigns/{id}/triggers`` answers ``200 {"id"}``; over
a rate limit (100/s for sends, 10/s for other calls, one trigger per broadcast every
10 s) the answer is 429 and nothing happens. Every accepted send and trigger is recorded
(kind ``app``), and also kept per person so ``GET /v1/customers/{id}/messages`` finds it.
Faults (``/_sandbox/app_faults``) strike sends and triggers; see `sandbox.app_state`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import socket
import struct
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.activities import LateFailureConfig
from sandbox.app_state import AppFaultConfig
from sandbox.controls import control, json_response
from sandbox.state import SandboxState

__all__ = ["app_routes"]

SEND_KINDS = ("email", "push", "sms", "in_app", "inbox_message", "whatsapp")
_NEEDS_TO = ("email", "sms", "whatsapp")
_READ_BODIES: dict[str, Any] = {
    "/v1/customers": {"identifiers": [], "ids": [], "next": ""},
    "/v1/customers/attributes": {"customers": []},
    "/v1/segments": {"segments": []},
    "/v1/campaigns": {"campaigns": []},
    "/v1/messages": {"messages": [], "next": ""},
    "/v1/exports": {"exports": []},
    "/v1/collections": {"collections": []},
}


def _bearer(header: str | None) -> str | None:
    if header is None or header[:7].lower() != "bearer ":
        return None
    return header[7:].strip() or None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, {"meta": {"error": message}}, headers)


def _person(identifiers: Any) -> str | None:
    if type(identifiers) is not dict or len(identifiers) != 1:
        return None
    name, value = next(iter(identifiers.items()))
    return f"{name}:{value}"


def check_send(kind: str, body: Any) -> str | None:
    """What Customer.io would refuse a send for, or None."""
    if type(body) is not dict:
        return "body must be a JSON object"
    ident = body.get("identifiers")
    if (
        type(ident) is not dict
        or len(ident) != 1
        or next(iter(ident)) not in ("id", "email", "cio_id")
    ):
        return "identifiers must hold exactly one of id, email, cio_id"
    if kind != "email" and body.get("transactional_message_id") in (None, ""):
        return "transactional_message_id is required"
    if kind in _NEEDS_TO and not (type(body.get("to")) is str and body["to"]):
        return "to is required"
    if kind == "email":
        count = sum(
            len([a for a in str(body.get(f) or "").split(",") if a.strip()])
            for f in ("to", "cc", "bcc")
        )
        if count > 15:
            return "at most 15 recipients"
        for name, content in (body.get("attachments") or {}).items():
            try:
                base64.b64decode(content, validate=True)
            except (binascii.Error, TypeError, ValueError):
                return f"attachment {name} is not base64"
    if len(orjson.dumps({k: v for k, v in body.items() if k != "attachments"})) > 1_000_000:
        return "payload over 1 MB"
    return None


def _reset_connection(request: Request) -> None:
    """Drop the client's connection with a TCP reset, no answer sent."""
    cycle = getattr(request.receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("cannot reach the connection to reset it")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class AppApi:
    """App API endpoints bound to one `SandboxState`."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    async def send(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        if kind not in SEND_KINDS:
            return _error(404, f"unknown send kind {kind!r}")
        return await self._act(request, "send", kind, None, await request.body())

    async def trigger(self, request: Request) -> Response:
        raw = request.path_params["broadcast_id"]
        if not raw.isdigit():
            return _error(404, "broadcast not found")
        return await self._act(request, "broadcast", "trigger", int(raw), await request.body())

    async def alias(self, request: Request) -> Response:
        """The seed's ``POST /v1/send/broadcast {"id", ...}`` (not Customer.io's): the id
        moves to the path, so the seed collection runs against the sandbox directly too."""
        try:
            doc = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(400, "request body is not valid JSON")
        broadcast_id = doc.get("id") if type(doc) is dict else None
        if type(broadcast_id) is not int or broadcast_id < 1:
            return _error(400, "id must be a broadcast id")
        rest = orjson.dumps({k: v for k, v in doc.items() if k != "id"})
        return await self._act(request, "broadcast", "trigger", broadcast_id, rest)

    async def _act(
        self,
        request: Request,
        limit_class: str,
        kind: str,
        broadcast_id: int | None,
        raw: bytes,
    ) -> Response:
        recorder, app = self.state.recorder, self.state.app
        seq, received_at = recorder.next_seq(), time.time()
        key = _bearer(request.headers.get("authorization"))
        fault = app.draw() if key in app.keys else "none"
        response: Response | None = None
        recorded = False
        if key not in app.keys:
            response = _error(401, "Unauthorized request")
        elif fault == "reset_before":
            _reset_connection(request)
        elif fault == "status":
            wait = app.faults.retry_after_s
            headers = None if wait is None else {"Retry-After": f"{wait:g}"}
            response = _error(app.faults.error_status, "sandbox fault", headers)
        elif not self._admit(key, limit_class, broadcast_id, received_at):
            response = _error(429, "rate limit exceeded", {"Retry-After": "1"})
        else:
            response, recorded = self._accept(raw, key, kind, broadcast_id, seq, received_at)
        # Logged before a hang or a reset, so the log is complete while the answer is pending.
        status = 0 if response is None or (recorded and fault == "reset") else response.status_code
        recorder.log_request(
            {
                "seq": seq,
                "method": "POST",
                "path": request.url.path,
                "site_id": key,
                "status": status,
                "body_bytes": len(raw),
                "op_count": 1,
                "received_at": received_at,
                "fault": fault,
            }
        )
        if recorded and fault == "hang":
            await asyncio.sleep(app.faults.hang_s)
        elif recorded and fault == "reset":
            _reset_connection(request)
        return response if response is not None else Response(status_code=204)

    def _admit(self, key: str, limit_class: str, broadcast_id: int | None, now: float) -> bool:
        config, windows = self.state.config, self.state.app.windows
        if limit_class == "broadcast":
            interval = config.app_broadcast_interval_s
            return windows.admit(key, f"broadcast:{broadcast_id}", 1, interval, now)
        return windows.admit(key, "send", config.app_send_rps, 1.0, now)

    def _accept(
        self,
        raw: bytes,
        key: str,
        kind: str,
        broadcast_id: int | None,
        seq: int,
        received_at: float,
    ) -> tuple[Response, bool]:
        try:
            body = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            return _error(400, "request body is not valid JSON"), False
        if broadcast_id is not None:
            unknown = self.state.config.app_unknown_broadcasts
            if broadcast_id in unknown:
                return _error(404, "broadcast not found"), False
            trigger_id = self.state.app.next_trigger_id
            self.state.app.next_trigger_id += 1
            record = {
                "kind": "trigger",
                "broadcast_id": broadcast_id,
                "id": trigger_id,
                "body": body,
            }
            self.state.recorder.record_ops("app", seq, key, [(0, record)], received_at)
            return json_response(200, {"id": trigger_id}), True
        problem = check_send(kind, body)
        if problem is not None:
            self.state.recorder.ops_rejected += 1
            return _error(400, problem), False
        delivery_id = secrets.token_urlsafe(21)
        queued_at = int(received_at)
        record = {"kind": kind, "delivery_id": delivery_id, "body": body}
        self.state.recorder.record_ops("app", seq, key, [(0, record)], received_at)
        message = {
            "id": delivery_id,
            "customer_identifiers": body["identifiers"],
            "recipient": body.get("to"),
            "subject": body.get("subject"),
            "created": queued_at,
            "type": kind,
            "transactional_message_id": body.get("transactional_message_id"),
        }
        person = _person(body["identifiers"])
        if person is not None:
            self.state.app.messages.setdefault(person, []).append(message)
        return json_response(200, {"delivery_id": delivery_id, "queued_at": queued_at}), True

    async def read(self, request: Request) -> Response:
        """Every App API read: the 10/s budget, then a documented body shape."""
        recorder, app = self.state.recorder, self.state.app
        seq, now = recorder.next_seq(), time.time()
        key = _bearer(request.headers.get("authorization"))
        if key not in app.keys:
            response = _error(401, "Unauthorized request")
        elif not app.windows.admit(key, "app", self.state.config.app_rps, 1.0, now):
            response = _error(
                429, "Your request is over the 10-per-second limit", {"Retry-After": "1"}
            )
        elif _is_activities(request) and self.state.activities.over_quota(key):
            # Customer.io's daily quota answers 429 without Retry-After: wait for tomorrow.
            response = _error(429, "Your request is over the daily limit")
        elif _is_activities(request):
            response = self._activities(request, key, now)
        else:
            response = json_response(200, self._read_body(request))
        recorder.log_request(
            {
                "seq": seq,
                "method": request.method,
                "path": request.url.path,
                "site_id": key,
                "status": response.status_code,
                "body_bytes": 0,
                "op_count": 0,
                "received_at": now,
                "query": str(request.url.query),
            }
        )
        return response

    def _activities(self, request: Request, key: str, now: float) -> Response:
        """``GET /v1/activities`` and ``GET /v1/customers/{id}/activities``."""
        query = dict(request.query_params)
        parts = request.url.path.rstrip("/").split("/")
        id_type = query.get("id_type", "id")
        person = None
        if len(parts) == 5:
            person = {id_type: parts[3]}
        elif query.get("customer_id"):
            person = {id_type: query["customer_id"]}
        if id_type not in ("id", "email", "cio_id"):
            return _error(400, "id_type must be id, email or cio_id")
        try:
            return json_response(200, self.state.activities.page(key, query, now, person))
        except ValueError as exc:
            return _error(400, str(exc))

    def _read_body(self, request: Request) -> Any:
        path = request.url.path.rstrip("/")
        parts = path.split("/")
        if len(parts) == 5 and parts[2] == "customers" and parts[4] == "messages":
            id_type = request.query_params.get("id_type", "id")
            found = self.state.app.messages.get(f"{id_type}:{parts[3]}", [])
            return {"messages": found, "next": ""}
        if len(parts) == 5 and parts[2] == "customers":
            return {parts[4]: [] if parts[4] != "attributes" else {}, "customer": {"id": parts[3]}}
        if path in _READ_BODIES:
            if request.method == "POST" and parts[2] in ("segments", "collections"):
                return {parts[2][:-1]: {"id": self.state.recorder.last_seq, "name": "created"}}
            return _READ_BODIES[path]
        if len(parts) >= 4 and parts[2] == "exports" and request.method == "POST":
            export = {"id": self.state.recorder.last_seq, "type": parts[3], "status": "pending"}
            return {"export": export}
        if len(parts) == 5 and parts[2] == "campaigns" and parts[4] == "metrics":
            return {"metric": {"series": {"sent": [0], "delivered": [0]}}}
        return {parts[2][:-1] if parts[2].endswith("s") else parts[2]: {"id": parts[-1]}}


def _is_activities(request: Request) -> bool:
    parts = request.url.path.rstrip("/").split("/")
    return parts[-1] == "activities" and (
        len(parts) == 3 or (len(parts) == 5 and parts[2] == "customers")
    )


_READ_PATHS = (
    ("GET", "/v1/activities"),
    ("GET", "/v1/customers"),
    ("POST", "/v1/customers"),
    ("POST", "/v1/customers/attributes"),
    ("GET", "/v1/customers/{id}/{what}"),
    ("GET", "/v1/segments"),
    ("POST", "/v1/segments"),
    ("GET", "/v1/segments/{id}"),
    ("GET", "/v1/segments/{id}/{what}"),
    ("GET", "/v1/campaigns"),
    ("GET", "/v1/campaigns/{id}"),
    ("GET", "/v1/campaigns/{id}/{what}"),
    ("GET", "/v1/campaigns/{id}/triggers/{trigger_id}"),
    ("GET", "/v1/campaigns/{id}/triggers/{trigger_id}/errors"),
    ("GET", "/v1/messages"),
    ("GET", "/v1/messages/{id}"),
    ("GET", "/v1/exports"),
    ("POST", "/v1/exports/{what}"),
    ("GET", "/v1/exports/{id}"),
    ("GET", "/v1/exports/{id}/download"),
    ("GET", "/v1/collections"),
    ("POST", "/v1/collections"),
    ("GET", "/v1/collections/{id}"),
    ("GET", "/v1/collections/{id}/content"),
)


def app_routes(state: SandboxState) -> list[Route]:
    """Routes for the App API sends, triggers, reads and its fault control."""
    api = AppApi(state)

    async def set_faults(request: Request) -> Any:
        try:
            doc = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise ValueError("request body is not valid JSON") from None
        state.app.set_faults(AppFaultConfig.from_json(doc))
        return state.app.faults.to_json()

    async def set_late_failures(request: Request) -> Any:
        try:
            doc = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise ValueError("request body is not valid JSON") from None
        state.activities.set(LateFailureConfig.from_json(doc))
        return {**state.activities.config.to_json(), **state.activities.stats()}

    async def late_failures(request: Request) -> Any:
        return {**state.activities.config.to_json(), **state.activities.stats()}

    routes = [
        Route("/v1/send/broadcast", api.alias, methods=["POST"]),
        Route("/v1/send/{kind}", api.send, methods=["POST"]),
        Route("/v1/campaigns/{broadcast_id}/triggers", api.trigger, methods=["POST"]),
        Route("/_sandbox/app_faults", control(set_faults), methods=["POST"]),
        Route("/_sandbox/late_failures", control(set_late_failures), methods=["POST"]),
        Route("/_sandbox/late_failures", control(late_failures), methods=["GET"]),
    ]
    routes += [Route(path, api.read, methods=[method]) for method, path in _READ_PATHS]
    return routes
