"""The JSON API's error boundary: one registry from exception type to response.

A dispatcher does not catch; it raises, and the app's one ``except`` hands the exception
to `ErrorHandlers.response`, which walks the exception's MRO for the closest registered
type (as Starlette's `_exception_handler.py` does), so a subclass is answered by its own
handler when it has one and by its parent's otherwise. `JSON_ERRORS` is the ingest and
admin API's table:

    InvalidRequest     its status, the broken rules named (field, rule, message)
    BodyRefused        413 or 408, ``Connection: close``: the rest is not worth reading
    Overloaded         503 naming the high-water mark, Retry-After from the mark
    StoreUnavailable   503, Retry-After 1: nothing was stored, the producer must retry
    Exception          500, logged with the route

The console has its own table of HTML pages for the same exceptions
(`service.console.app`), on Starlette's handlers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from service.errors import FieldError, InvalidRequest, Overloaded, StoreUnavailable
from service.web.http import BodyRefused, Response, Scope, error_response

log = logging.getLogger("cioq.api")

#: Where the ingest dispatcher leaves the matched route's name, for metrics and logs.
ROUTE_SCOPE_KEY = "cioq.route"

ErrorHandler = Callable[[Scope, Any], Response]

STORE_UNAVAILABLE = error_response(
    503,
    [FieldError("store", "unavailable", "the queue is unavailable; retry later")],
    headers=((b"retry-after", b"1"),),
)


class ErrorHandlers:
    """Exception type → handler; the closest type along the exception's MRO answers."""

    def __init__(self, handlers: Mapping[type[Exception], ErrorHandler]) -> None:
        self._handlers = dict(handlers)

    def response(self, scope: Scope, exc: Exception) -> Response:
        for cls in type(exc).__mro__:
            handler = self._handlers.get(cls)
            if handler is not None:
                return handler(scope, exc)
        raise exc


def _invalid(scope: Scope, exc: InvalidRequest) -> Response:
    return error_response(exc.status, exc.errors)


def _body_refused(scope: Scope, exc: BodyRefused) -> Response:
    return error_response(exc.status, [exc.error], headers=((b"connection", b"close"),))


def _overloaded(scope: Scope, exc: Overloaded) -> Response:
    retry_after = str(exc.retry_after_s).encode()
    return error_response(503, [exc.mark], headers=((b"retry-after", retry_after),))


def _store_unavailable(scope: Scope, exc: StoreUnavailable) -> Response:
    log.warning("store unavailable: %s", exc)
    return STORE_UNAVAILABLE


def _internal(scope: Scope, exc: Exception) -> Response:
    route = scope.get(ROUTE_SCOPE_KEY, "unmatched")
    log.error("unexpected error on %s %s", scope.get("method"), route, exc_info=exc)
    return error_response(500, [FieldError("server", "internal", "internal error")])


JSON_ERRORS = ErrorHandlers(
    {
        InvalidRequest: _invalid,
        BodyRefused: _body_refused,
        Overloaded: _overloaded,
        StoreUnavailable: _store_unavailable,
        Exception: _internal,
    }
)
