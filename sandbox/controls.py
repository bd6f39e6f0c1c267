"""The sandbox's `/_sandbox/` endpoints: what tests use to inspect and steer it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from sandbox.state import FaultConfig, SandboxState

Endpoint = Callable[[Request], Awaitable[Response]]


def json_response(status: int, doc: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status, headers, media_type="application/json")


def _query_int(request: Request, name: str, default: int, minimum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None
    if value < minimum:
        raise ValueError(f"{name} must be ≥ {minimum}")
    return value


async def _json_body(request: Request) -> Any:
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise ValueError("request body is not valid JSON") from None


def control(handler: Callable[[Request], Awaitable[Any]]) -> Endpoint:
    """A `/_sandbox/` endpoint: returns JSON, and a ValueError becomes 400 {"error"}."""

    async def endpoint(request: Request) -> Response:
        try:
            return json_response(200, await handler(request))
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})

    return endpoint


class Controls:
    """The `/_sandbox/` endpoints tests use to inspect and steer the sandbox."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    async def received(self, request: Request) -> Any:
        """Accepted ops from cursor `after`, optionally only one site's."""
        return self.state.recorder.page_records(
            request.query_params.get("site_id") or None,
            _query_int(request, "after", 0, 0),
            _query_int(request, "limit", 10_000, 1),
        )

    async def requests(self, request: Request) -> Any:
        """The request log from cursor `after`."""
        return self.state.recorder.page_requests(
            _query_int(request, "after", 0, 0), _query_int(request, "limit", 10_000, 1)
        )

    async def stats(self, request: Request) -> Any:
        """Counters since start-up or the last reset."""
        return self.state.recorder.stats()

    async def reset(self, request: Request) -> Any:
        """Forget records, counters and faults; restore the configured credentials."""
        self.state.reset()
        return {}

    async def credentials(self, request: Request) -> Any:
        """Set a site's API key, or remove the site when `api_key` is null."""
        doc = await _json_body(request)
        if type(doc) is dict and "write_key" in doc:
            return self._write_key(doc)
        site_id = doc.get("site_id") if type(doc) is dict else None
        if type(site_id) is not str or not site_id or "api_key" not in doc:
            raise ValueError('expected {"site_id": "...", "api_key": "..." | null}')
        api_key = doc["api_key"]
        if api_key is None:
            self.state.credentials.pop(site_id, None)
        elif type(api_key) is str:
            self.state.credentials[site_id] = api_key
        else:
            raise ValueError("api_key must be a string or null")
        return {"site_ids": sorted(self.state.credentials)}

    def _write_key(self, doc: dict[str, Any]) -> Any:
        """``{"write_key": K, "active": bool}``: accept or refuse a Pipelines write key."""
        key, active = doc.get("write_key"), doc.get("active", True)
        if type(key) is not str or not key or type(active) is not bool:
            raise ValueError('expected {"write_key": "...", "active": true | false}')
        if active:
            self.state.write_keys.add(key)
        else:
            self.state.write_keys.discard(key)
        return {"write_keys": len(self.state.write_keys)}

    async def set_faults(self, request: Request) -> Any:
        """Replace the fault settings; `{}` clears them."""
        self.state.faults.set(FaultConfig.from_json(await _json_body(request)))
        return self.state.faults.to_json()

    async def get_faults(self, request: Request) -> Any:
        """The fault settings, with the part of `status_sequence` not yet used."""
        return self.state.faults.to_json()
