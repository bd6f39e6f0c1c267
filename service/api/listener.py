"""The ingest listener: uvicorn with limits a hostile or broken client cannot get around.

uvicorn's httptools protocol buffers every header a client sends and waits for them
without a deadline, so a client can hold memory with a huge header block or hold a
connection by trickling it. `limited_protocol` adds, per request:

- at most ``CIOQ_MAX_HEADER_COUNT`` headers and ``CIOQ_MAX_HEADER_BYTES`` of request line
  plus headers, else 431 and the connection is closed as soon as the limit is crossed;
- the request line and headers within ``CIOQ_HEADER_TIMEOUT_S`` of the first byte,
  else 408 and close.

The body's limits (declared size over the cap → 413 at once, a body slower than
``CIOQ_BODY_TIMEOUT_S`` → 408) are the app's (`service.web.http.read_body`), because
only it knows the route and the caller.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.config import ListenerSettings

_REFUSALS = {
    408: ("Request Timeout", "timeout", "the request line and headers did not arrive in time"),
    431: ("Request Header Fields Too Large", "limit", "too many headers, or headers too large"),
}


@dataclass(frozen=True, slots=True)
class HeaderLimits:
    max_count: int
    max_bytes: int
    timeout_s: float

    @classmethod
    def of(cls, listener: ListenerSettings) -> HeaderLimits:
        return cls(listener.max_header_count, listener.max_header_bytes, listener.header_timeout_s)


class _LimitExceeded(Exception):
    """Raised inside a parser callback to stop parsing; the status goes out instead of 400."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing requests whose head is too big or too slow."""

    limits = HeaderLimits(100, 16_384, 10.0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_count = 0
        self._head_bytes = 0
        self._head_raw_bytes = 0
        self._refusal = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # httptools hands over a header only once it is complete, so a head that never
        # ends is bounded here, by the raw bytes received while it is unfinished.
        if self._head_timer is not None and not self.transport.is_closing():
            self._head_raw_bytes += len(data)
            if self._head_raw_bytes > self.limits.max_bytes:
                self._refuse(431)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_count = 0
        self._head_bytes = 0
        self._head_raw_bytes = 0
        self._head_timer = self.loop.call_later(self.limits.timeout_s, self._head_too_slow)

    def on_url(self, url: bytes) -> None:
        self._count(len(url), headers=0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # httptools may report one header in pieces; each piece counts its bytes, and
        # the count can only over-estimate, which errs on the refusing side.
        self._count(len(name) + len(value) + 4, headers=1 if name else 0)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """Parser errors answer 400, except our own limits, which answer their status."""
        if self._refusal:
            self._refuse(self._refusal)
            return
        super().send_400_response(msg)

    def _count(self, size: int, *, headers: int) -> None:
        self._head_bytes += size
        self._head_count += headers
        if self._head_count > self.limits.max_count or self._head_bytes > self.limits.max_bytes:
            self._refusal = 431
            raise _LimitExceeded

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self._refuse(408)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, status: int) -> None:
        self._cancel_head_timer()
        reason, rule, message = _REFUSALS[status]
        body = orjson.dumps({"errors": [{"field": "headers", "rule": rule, "message": message}]})
        head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        head += f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        self.transport.write(head.encode() + body)
        self.transport.close()


def limited_protocol(limits: HeaderLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to `limits`."""
    return type("LimitedHttpTools", (LimitedHttpToolsProtocol,), {"limits": limits})


def uvicorn_config(app: Any, listener: ListenerSettings, **options: Any) -> uvicorn.Config:
    """uvicorn's config for the ingest API, with the listener limits of `settings`."""
    return uvicorn.Config(
        app,
        http=limited_protocol(HeaderLimits.of(listener)),
        ws="none",
        access_log=False,
        lifespan="on",
        **options,
    )
