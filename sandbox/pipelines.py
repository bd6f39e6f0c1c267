"""The sandbox's Pipelines (CDP) API: ``POST /v1/identify|track|page|screen|group|alias|batch``.

Customer.io's documented behaviour (reference `cdp-and-app-api.md` §1): Basic auth with the
write key as the username and a blank password; without ``X-Strict-Mode: 1`` every request
gets 200 and invalid or oversized calls are silently dropped; with it, a bad key is 401 and
a request with any invalid call is refused whole with 400 ``{"meta":{"errors":[...]}}``
(whether strict mode refuses a whole batch for one bad call is undocumented; refusing whole
is the reading that makes a client find its bad calls). gzip bodies are accepted, as the
Python library can send them. Faults apply as on the Track side, keyed by the write key.
"""

from __future__ import annotations

import asyncio
import binascii
import gzip
import time
import zlib
from base64 import b64decode
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.controls import json_response
from sandbox.pipelines_rules import CALL_TYPES, check_call
from sandbox.state import SandboxState

__all__ = ["pipelines_routes"]


def write_key_of(header: str | None) -> str | None:
    """The write key of a Basic ``KEY:`` header (Bearer is taken too, as cioq accepts it)."""
    if header is None:
        return None
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip() or None
    if scheme.lower() != "basic":
        return None
    try:
        key, sep, _ = b64decode(credentials.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return key if sep and key else None


def _errors(status: int, messages: list[str]) -> Response:
    return json_response(status, {"meta": {"errors": messages}})


def _poisoned(call: Any) -> bool:
    props = call.get("properties") if type(call) is dict else None
    return type(props) is dict and props.get("sandbox_poison") == "400"


class Pipelines:
    """Pipelines endpoints bound to one `SandboxState`."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def endpoint(self, call_type: str | None) -> Any:
        async def handle(request: Request) -> Response:
            return await self._answer(request, call_type)

        return handle

    async def _answer(self, request: Request, call_type: str | None) -> Response:
        recorder = self.state.recorder
        seq = recorder.next_seq()
        received_at = time.time()
        key = write_key_of(request.headers.get("authorization"))
        strict = request.headers.get("x-strict-mode") == "1"
        raw = await request.body()
        injection = self.state.faults.on_request(key)
        if injection.latency_s:
            await asyncio.sleep(injection.latency_s)
        count = 0
        if injection.status is not None:
            headers = {"Retry-After": injection.retry_after} if injection.retry_after else None
            response = json_response(
                injection.status, {"meta": {"errors": ["sandbox fault"]}}, headers
            )
        elif not self.state.authenticate_write_key(key):
            response = _errors(401, ["invalid write key"]) if strict else json_response(200, {})
        else:
            response, count = self._calls(request, raw, call_type, seq, key, received_at, strict)
        recorder.log_request(
            {
                "seq": seq,
                "method": request.method,
                "path": request.url.path,
                "site_id": key,
                "status": response.status_code,
                "body_bytes": len(raw),
                "op_count": count,
                "received_at": received_at,
                "strict": strict,
                "gzip": request.headers.get("content-encoding") == "gzip",
            }
        )
        return response

    def _calls(
        self,
        request: Request,
        raw: bytes,
        call_type: str | None,
        seq: int,
        key: str | None,
        received_at: float,
        strict: bool,
    ) -> tuple[Response, int]:
        """Validate and record the calls of one authenticated request."""
        config = self.state.config
        refuse = _errors if strict else (lambda status, messages: json_response(200, {}))
        body = raw
        if request.headers.get("content-encoding") == "gzip":
            try:
                body = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error):
                return refuse(400, ["body is not valid gzip"]), 0
        limit = config.cdp_max_body_bytes if call_type is None else config.cdp_max_call_bytes
        if len(body) > limit:
            return refuse(400, [f"request body over {limit} bytes"]), 0
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return refuse(400, ["body is not valid JSON"]), 0
        if call_type is None:
            calls = doc.get("batch") if type(doc) is dict else None
            if type(calls) is not list or not calls:
                return refuse(400, ["batch must be a non-empty list of calls"]), 0
        else:
            calls = [doc]
        accepted: list[tuple[int, Any]] = []
        problems: list[str] = []
        for index, call in enumerate(calls):
            problem = check_call(call, call_type, config.cdp_max_call_bytes)
            if problem is None:
                accepted.append((index, {**call, "type": call_type or call["type"]}))
            else:
                problems.append(f"batch[{index}]: {problem}" if call_type is None else problem)
        poisoned = [item for item in accepted if _poisoned(item[1])]
        if strict and poisoned:
            # Refused naming nothing: a client must find the bad calls itself (by bisection).
            self.state.recorder.ops_rejected += len(calls)
            return _errors(400, ["the request was refused"]), len(calls)
        accepted = [item for item in accepted if not _poisoned(item[1])]
        problems += ["sandbox_poison"] * len(poisoned)
        self.state.recorder.ops_rejected += len(problems)
        if strict and problems:
            return _errors(400, problems), len(calls)
        self.state.recorder.record_ops("cdp", seq, key, accepted, received_at)
        return json_response(200, {}), len(calls)


def pipelines_routes(state: SandboxState) -> list[Route]:
    """Routes for every Pipelines endpoint."""
    pipelines = Pipelines(state)
    routes = [
        Route(f"/v1/{kind}", pipelines.endpoint(kind), methods=["POST"])
        for kind in sorted(CALL_TYPES)
    ]
    routes.append(Route("/v1/batch", pipelines.endpoint(None), methods=["POST"]))
    return routes
