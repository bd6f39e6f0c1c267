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
from urllib.parse import unquote

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.api import direct
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
    #: The JSON API answered without ASGI (`service.api.direct`), when the app is cioq's.
    json_api: direct.DirectApp | None = None
    forwarded: direct.Forwarded | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_count = 0
        self._head_bytes = 0
        self._head_raw_bytes = 0
        self._refusal = 0
        self._head_pending = False
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_pending and not self.transport.is_closing():
            # The head did not come whole with this read: from now on it has a deadline.
            # (Armed here, not per request: most heads come in one read and never need it.)
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.limits.timeout_s, self._head_too_slow)
            # httptools hands over a header only once it is complete, so a head that
            # never ends is bounded here, by the raw bytes received while it is unfinished.
            self._head_raw_bytes += len(data)
            if self._head_raw_bytes > self.limits.max_bytes:
                self._refuse(431)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_count = 0
        self._head_bytes = 0
        self._head_raw_bytes = 0
        self._head_pending = True

    def on_url(self, url: bytes) -> None:
        self._count(len(url), headers=0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # httptools may report one header in pieces; each piece counts its bytes, and
        # the count can only over-estimate, which errs on the refusing side. (`_count`
        # inlined: this runs for every header of every request.)
        self._head_bytes += len(name) + len(value) + 4
        if name:
            self._head_count += 1
        limits = self.limits
        if self._head_count > limits.max_count or self._head_bytes > limits.max_bytes:
            self._refusal = 431
            raise _LimitExceeded
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        if self.json_api is None or self.limit_concurrency is not None:
            super().on_headers_complete()
            return
        parsed = httptools.parse_url(self.url)
        if not self.json_api.serves_directly(parsed.path):
            super().on_headers_complete()
            return
        # What uvicorn's own on_headers_complete puts in the scope.
        scope = self.scope
        scope["method"] = self.parser.get_method().decode("ascii")
        version = self.parser.get_http_version()
        if version != "1.1":
            scope["http_version"] = version
        path = parsed.path.decode("ascii")
        scope["path"] = self.root_path + (unquote(path) if "%" in path else path)
        scope["raw_path"] = self.root_path.encode("ascii") + parsed.path
        scope["query_string"] = parsed.query or b""
        direct.start(self, self.json_api, self.forwarded, self._start_asgi_task)

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
        self._head_pending = False
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


def limited_protocol(
    limits: HeaderLimits,
    app: direct.DirectApp | None = None,
    trusted_proxies: list[str] | None = None,
) -> type[LimitedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to `limits`, handing
    `app`'s JSON API requests to it directly (X-Forwarded-* read from `trusted_proxies`)."""
    forwarded = direct.Forwarded(trusted_proxies) if trusted_proxies else None
    attrs = {"limits": limits, "json_api": app, "forwarded": forwarded}
    return type("LimitedHttpTools", (LimitedHttpToolsProtocol,), attrs)


def uvicorn_config(app: Any, listener: ListenerSettings, **options: Any) -> uvicorn.Config:
    """uvicorn's config for the ingest API, with the listener limits of `settings`; an
    app with `respond` (cioq's) answers its JSON API without ASGI."""
    own = app if hasattr(app, "respond") and hasattr(app, "serves_directly") else None
    trusted = list(listener.trusted_proxies) or None
    return uvicorn.Config(
        app,
        http=limited_protocol(HeaderLimits.of(listener), own, trusted),
        ws="none",
        access_log=False,
        lifespan="on",
        **options,
    )
