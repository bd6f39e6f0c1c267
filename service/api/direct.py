"""JSON API requests answered without ASGI: uvicorn's protocol, cioq's request cycle.

uvicorn still owns the sockets, TLS, keep-alive, pipelining, flow control, graceful
shutdown and the lifespan; only the per-request part changes. uvicorn's cycle turns each
request into ASGI messages (a ``receive`` per body piece, two ``send`` calls, header
checks per response) that the ingest API then turns back into bytes. `DirectCycle`
stands where uvicorn's cycle stands (the protocol fills its body and wakes it, exactly as
it does its own) and writes the answer in one ``transport.write``: 26 µs → 15 µs of
server CPU per request for a trivial app on this 2-core machine, 11 µs of a single-op
request's ~100 µs (`bench/run --only ingest`). ``/metrics`` and the console's pages keep
going through ASGI (`IngestApp.serves_directly`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from service.web.http import BodyRefused, Response, Scope, response_headers

if TYPE_CHECKING:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("cioq.api")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
INTERNAL = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
    b"content-length: 2\r\nconnection: close\r\n\r\n{}"
)


class DirectApp(Protocol):
    """What the listener hands requests to (`service.api.app.IngestApp`)."""

    def serves_directly(self, raw_path: bytes) -> bool: ...

    async def respond(self, scope: Scope, body: Any) -> Response: ...


async def _nothing(*_: Any) -> None:
    return None


class Forwarded:
    """X-Forwarded-Proto/For from trusted proxies, read by uvicorn's own middleware (the
    ASGI path's), so both paths see the same scheme and client."""

    def __init__(self, trusted: list[str]) -> None:
        self._middleware = ProxyHeadersMiddleware(_nothing, trusted)

    async def apply(self, scope: Scope) -> None:
        await self._middleware(scope, _nothing, _nothing)  # type: ignore[arg-type]


class DirectCycle:
    """One request: its body as the protocol receives it, then its answer as bytes."""

    __slots__ = (
        "_too_slow",
        "app",
        "body",
        "disconnected",
        "forwarded",
        "keep_alive",
        "message_event",
        "more_body",
        "on_response",
        "proto",
        "response_complete",
        "scope",
        "waiting_for_100_continue",
    )

    def __init__(
        self,
        proto: HttpToolsProtocol,
        app: DirectApp,
        forwarded: Forwarded | None,
        *,
        keep_alive: bool,
        expect_100_continue: bool,
    ) -> None:
        self.proto = proto
        self.app = app
        self.forwarded = forwarded
        self.scope: Scope = proto.scope  # type: ignore[assignment]
        # The fields uvicorn's protocol reads and writes on its own cycle.
        self.body = bytearray()
        self.more_body = True
        self.message_event = asyncio.Event()
        self.response_complete = False
        self.disconnected = False
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect_100_continue
        self.on_response: Callable[[], None] = proto.on_response_complete
        self._too_slow = False

    async def run_asgi(self, _app: Any) -> None:
        """The protocol's entry point for its cycles; `_app` is the ASGI app, unused."""
        try:
            if self.forwarded is not None:
                await self.forwarded.apply(self.scope)
            response = await self.app.respond(self.scope, self)
            if self.proto.flow.write_paused and not self.disconnected:
                await self.proto.flow.drain()
            if not self.disconnected:
                self._write(response)
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                log.error("unexpected error answering a request", exc_info=exc)
            if not self.response_complete and not self.disconnected:
                self.proto.transport.write(INTERNAL)
                self.proto.transport.close()
            if not isinstance(exc, Exception):
                raise
        finally:
            self.on_response = _noop

    async def read(self, headers: dict[bytes, bytes], *, max_bytes: int, timeout_s: float) -> bytes:
        """The body, waiting only when it has not all arrived with the request's head."""
        declared = headers.get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > max_bytes:
            raise BodyRefused.too_large(max_bytes)
        if self.more_body and not self.disconnected:
            await self._wait_for_body(max_bytes, timeout_s)
        if self.disconnected:
            return b""
        if len(self.body) > max_bytes:
            raise BodyRefused.too_large(max_bytes)
        return bytes(self.body)

    async def _wait_for_body(self, max_bytes: int, timeout_s: float) -> None:
        transport = self.proto.transport
        if self.waiting_for_100_continue and not transport.is_closing():
            transport.write(CONTINUE)
            self.waiting_for_100_continue = False
        timer = self.proto.loop.call_later(timeout_s, self._slow)
        try:
            while self.more_body and not self.disconnected:
                if len(self.body) > max_bytes:
                    raise BodyRefused.too_large(max_bytes)
                if self._too_slow:
                    raise BodyRefused.too_slow(timeout_s)
                self.proto.flow.resume_reading()  # the protocol pauses past 64 KiB
                await self.message_event.wait()
                self.message_event.clear()
        finally:
            timer.cancel()

    def _slow(self) -> None:
        self._too_slow = True
        self.message_event.set()

    def _write(self, response: Response) -> None:
        head = [STATUS_LINE[response.status]]
        for name, value in self.proto.server_state.default_headers:
            head += (name, b": ", value, b"\r\n")
        for name, value in response_headers(response):
            if name == b"connection" and b"close" in value.lower():
                self.keep_alive = False
            head += (name, b": ", value, b"\r\n")
        if not self.keep_alive and not any(n == b"connection" for n, _ in response.headers):
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        if self.scope["method"] != "HEAD":
            head.append(response.body)
        transport = self.proto.transport
        transport.write(b"".join(head))
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            transport.close()
        self.on_response()


def _noop() -> None:
    return None


def start(
    proto: HttpToolsProtocol,
    app: DirectApp,
    forwarded: Forwarded | None,
    start_task: Callable[[Any, Any], None],
) -> None:
    """Put a `DirectCycle` where the protocol's own `on_headers_complete` puts its cycle."""
    existing = proto.cycle
    cycle = DirectCycle(
        proto,
        app,
        forwarded,
        keep_alive=proto.scope["http_version"] != "1.0" and proto.parser.should_keep_alive(),
        expect_100_continue=proto.expect_100_continue,
    )
    proto.cycle = cycle  # type: ignore[assignment]
    if existing is None or existing.response_complete:
        start_task(cycle, None)
    else:  # a pipelined request waits for the one before it, as uvicorn queues its own
        proto.flow.pause_reading()
        proto.pipeline.appendleft((cycle, None))  # type: ignore[arg-type]
