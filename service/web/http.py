"""Minimal HTTP plumbing for the ingest API: requests, responses, routing on raw paths.

Routing uses the *raw* path, split on ``/`` before percent-decoding, so an identifier
such as ``a%2Fb`` (the official SDK quotes ``/`` this way) stays one path segment.

Not Starlette, for speed: this layer served 1.3-1.7x the single-op req/s of the same ingest
on Starlette with raw-path routing (1.05x on 1,000-op batches; `bench/run --only framework`).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import unquote

import orjson

from service.errors import FieldError, InvalidRequest
from service.jobs import Traffic

# The ASGI spec's shapes (as starlette.types spells them), so IngestApp is an ASGI app to
# any server or test helper typed against the spec.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]


@dataclass(slots=True)
class Request:
    """One HTTP request, with its body read in full (bounded by the size cap)."""

    method: str
    segments: list[str]
    query: str
    headers: dict[bytes, bytes]
    body: bytes
    params: list[str] = field(default_factory=list)
    route: str = "unmatched"
    #: ``scheme://host[:port]`` as the caller reached this server.
    base_url: str = ""
    #: Live, or bulk when the producer marked it so (header or bulk ingest key).
    traffic: Traffic = Traffic.LIVE
    #: The producer (service) its ingest key names; stored with each of its jobs.
    producer: str = ""

    @property
    def raw_path(self) -> str:
        """The path as sent, still percent-encoded, for forwarding to the same v1 path."""
        return "/" + "/".join(self.segments)

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else None

    def json(self) -> Any:
        """The body as JSON; an empty body reads as None."""
        if not self.body.strip():
            return None
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest.of(
                "body", "json", f"the request body is not valid JSON: {exc}"
            ) from exc


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b"{}"
    headers: tuple[tuple[bytes, bytes], ...] = ()


OK = Response(200)


def json_response(
    status: int, payload: Any, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> Response:
    return Response(status, orjson.dumps(payload), headers)


def error_response(
    status: int,
    errors: list[FieldError],
    *,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    **extra: Any,
) -> Response:
    """The one shape of every 4xx/5xx body: ``{"errors":[{field, rule, message, ...}]}``.

    ``meta.error`` repeats the first message in Customer.io's v1 error shape, so
    clients written for Customer.io show a useful message too.
    """
    payload: dict[str, Any] = {"errors": [e.as_dict() for e in errors]}
    if errors:
        payload["meta"] = {"error": errors[0].message}
    payload.update(extra)
    return json_response(status, payload, headers)


#: Who may call a route: anyone, a producer's ingest key, an operator's admin key, or an
#: operator's signed console session (checked by `service.console`).
RouteAuth = Literal["public", "ingest", "admin", "session"]

#: ``handler(request, workspace)``; workspace is None on routes that need no ingest key.
Handler = Callable[..., Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    """``pattern`` segments are literals, or ``{name}`` for a path parameter."""

    method: str
    pattern: tuple[str, ...]
    name: str
    handler: Handler
    auth: RouteAuth = "ingest"


class Router:
    """Matches method + raw path segments; distinguishes 404 from 405."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes
        # The routes a path can match, by its length and first segment, in table order:
        # a request compares itself with a handful of routes, not all of them.
        heads = {(len(r.pattern), r.pattern[0]) for r in routes if r.pattern}
        self._candidates = {head: [r for r in routes if _may_match(r, *head)] for head in heads}
        lengths = {len(r.pattern) for r in routes}
        self._by_length = {n: [r for r in routes if _may_match(r, n, None)] for n in lengths}

    def match(self, method: str, raw_segments: list[str]) -> tuple[Route | None, list[str], bool]:
        """The route, its decoded params, and whether the path exists for another method."""
        path_found = False
        count = len(raw_segments)
        candidates = self._candidates.get((count, raw_segments[0])) if raw_segments else None
        if candidates is None:
            candidates = self._by_length.get(count, [])
        for route in candidates:
            params: list[str] = []
            for want, got in zip(route.pattern, raw_segments, strict=True):
                if want.startswith("{"):
                    if not got:
                        break
                    params.append(unquote(got))
                elif want != got:
                    break
            else:
                if route.method == method:
                    return route, params, True
                path_found = True
        return None, [], path_found


def _may_match(route: Route, length: int, first: str | None) -> bool:
    """Whether `route` can match a path of `length` segments whose first is `first`
    (None: a first segment no route names, so only a parameter takes it)."""
    if len(route.pattern) != length:
        return False
    if not route.pattern:
        return True
    head = route.pattern[0]
    return head.startswith("{") or head == first


def base_url_of(scope: Scope) -> str:
    """The URL prefix the caller used: the Host header, else the bound address."""
    scheme = scope.get("scheme", "http")
    for name, value in scope.get("headers", []):
        if name == b"host" and value:
            return f"{scheme}://{value.decode('latin-1')}"
    host, port = scope.get("server") or ("127.0.0.1", 80)
    return f"{scheme}://{host}:{port}"


def split_path(raw_path: bytes) -> list[str]:
    text = raw_path.decode("latin-1")
    return text.strip("/").split("/") if text.strip("/") else []


class BodyRefused(Exception):
    """The body is over the size cap (413) or arrived too slowly (408); `error` says which."""

    def __init__(self, status: int, error: FieldError) -> None:
        super().__init__(status)
        self.status = status
        self.error = error

    @classmethod
    def too_large(cls, max_bytes: int) -> BodyRefused:
        message = f"request body over {max_bytes} bytes"
        return cls(413, FieldError("body", "max_bytes", message, max_bytes))

    @classmethod
    def too_slow(cls, timeout_s: float) -> BodyRefused:
        return cls(
            408, FieldError("body", "timeout", f"request body not received in {timeout_s} s")
        )


class BodySource(Protocol):
    """Where a request's body comes from: the ASGI ``receive`` (`AsgiBody`), or the
    listener's own request cycle (`service.api.direct`)."""

    async def read(self, headers: dict[bytes, bytes], *, max_bytes: int, timeout_s: float) -> bytes:
        """The whole body (b"" when the client went away); BodyRefused when over
        `max_bytes` or slower than `timeout_s`."""
        ...


@dataclass(frozen=True, slots=True)
class AsgiBody:
    receive: Receive

    async def read(self, headers: dict[bytes, bytes], *, max_bytes: int, timeout_s: float) -> bytes:
        return await read_body(self.receive, headers, max_bytes=max_bytes, timeout_s=timeout_s)


async def read_body(
    receive: Receive, headers: dict[bytes, bytes], *, max_bytes: int, timeout_s: float
) -> bytes:
    """The whole request body; BodyRefused when over `max_bytes` or slower than `timeout_s`.

    A declared Content-Length over the cap is refused before a byte of the body is read.
    """
    declared = headers.get(b"content-length", b"").strip()
    if declared.isdigit() and int(declared) > max_bytes:
        raise BodyRefused.too_large(max_bytes)
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_all(receive, max_bytes)
    except TimeoutError:
        raise BodyRefused.too_slow(timeout_s) from None


async def _read_all(receive: Receive, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise BodyRefused.too_large(max_bytes)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def decode_body(body: bytes, encoding: str | None, *, max_bytes: int) -> bytes:
    """The body with its ``Content-Encoding`` undone; BodyRefused once it inflates past
    `max_bytes`.

    gzip is what Customer.io's Python Pipelines library sends when asked to compress; the
    cap applies to the inflated bytes, so a small bomb cannot make us hold gigabytes.
    """
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return body
    if encoding.strip().lower() != "gzip":
        raise InvalidRequest(
            [FieldError("content-encoding", "one_of", "Content-Encoding must be gzip or absent")],
            status=415,
        )
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise InvalidRequest.of("body", "gzip", f"the body is not valid gzip: {exc}") from exc
    if len(out) > max_bytes:
        raise BodyRefused.too_large(max_bytes)
    if not inflater.eof:
        raise InvalidRequest.of("body", "gzip", "the gzip body is truncated")
    return out


def response_headers(response: Response) -> list[tuple[bytes, bytes]]:
    """The response's headers, with its length and (unless it names its own) JSON's type."""
    own_type = any(name == b"content-type" for name, _ in response.headers)
    headers = [] if own_type else [*JSON_HEADERS]
    headers.append((b"content-length", str(len(response.body)).encode()))
    headers.extend(response.headers)
    return headers


async def send_response(send: Send, response: Response) -> None:
    headers = response_headers(response)
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
