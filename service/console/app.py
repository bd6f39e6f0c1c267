"""The operator console: a Starlette app of server-rendered pages under ``/console``.

The api hands it every ``/console`` request, ahead of its JSON router. Signing in takes an
admin key once and sets a signed session cookie (`service.console.session`); every POST
behind a session must carry the session's CSRF token, or nothing happens. Pages are Jinja2
templates with autoescaping on, so whatever a producer sent (payloads, identifiers, event
names, Customer.io's messages) is shown as text, never markup; the Content-Security-Policy
allows no inline script and no other origin, so even a value that slipped through could
not run. Producer values are never put into an ``href``.

Errors leave through one table, `_error_pages` (exception type → page), on Starlette's
exception handlers:

    HTTPException      404 "Not found" (an unknown path, or a page under another method)
    SignedOut          a GET goes to the sign-in page; a POST is refused, 403
    FormExpired        403: the CSRF token is not the session's
    BodyRefused        413 or 408: the form is over `MAX_FORM_BYTES` or arrived too slowly
    InvalidRequest     its status, naming the fields
    StoreUnavailable   503
    Exception          500 (Starlette then re-raises it to the server, which logs it)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.config import Settings
from service.console.overview import Overview
from service.console.pages import Form, Pages, redirect
from service.console.routes import Console, OperatorPage, PublicPage
from service.console.session import Sessions
from service.errors import FieldError, InvalidRequest, StoreUnavailable
from service.store.dead_letter_admin import DeadLetterAdmin
from service.store.forget import Forgetting
from service.store.workspace_control import WorkspaceControl
from service.web.auth import Authenticator
from service.web.http import BodyRefused, read_body

log = logging.getLogger("cioq.console")

MAX_FORM_BYTES = 256_000
SECURITY_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)

Endpoint = Callable[[Request], Awaitable[Response]]


class SignedOut(Exception):
    """A page behind a session was asked for without one."""


class FormExpired(InvalidRequest):
    """A POST behind a session without the session's CSRF token."""


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every console answer, pages, redirects and files alike."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_secured)


class TrailingSlash:
    """Serves ``/console/overview/`` as ``/console/overview``, as the api's own router does.

    Starlette would redirect instead, to an absolute URL built from the scheme the pod
    sees, which behind a TLS-terminating proxy is not the one the browser used.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/") or "/"}
        await self.app(scope, receive, send)


async def _form(request: Request, timeout_s: float) -> Form:
    """The request's form, read within the console's size and time caps."""
    headers = dict(request.scope["headers"])
    body = await read_body(request.receive, headers, max_bytes=MAX_FORM_BYTES, timeout_s=timeout_s)
    return Form(body.decode("utf-8", "replace"))


def _public(handler: PublicPage, timeout_s: float) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        return await handler(request, await _form(request, timeout_s))

    return endpoint


def _operator(handler: OperatorPage, pages: Pages, timeout_s: float) -> Endpoint:
    """The page behind a session, with the CSRF token checked on a POST."""

    async def endpoint(request: Request) -> Response:
        session = pages.session_of(request)
        if session is None:
            raise SignedOut
        form = await _form(request, timeout_s)
        if request.method == "POST" and not pages.sessions.csrf_ok(session, form.get("csrf")):
            message = "this form did not come from your session; reload the page and try again"
            raise FormExpired([FieldError("csrf", "invalid", message)], status=403)
        return await handler(request, session, form)

    return endpoint


def _error_pages(pages: Pages) -> dict[Any, Callable[[Request, Any], Awaitable[Response]]]:
    """Exception type → the page that answers it (the table in the module's docstring)."""

    async def not_found(request: Request, exc: HTTPException) -> Response:
        return pages.error(request, 404, "Not found")

    async def signed_out(request: Request, exc: SignedOut) -> Response:
        if request.method == "GET":
            return redirect("/console/sign-in")
        return pages.error(request, 403, "Signed out", signed_in=False)

    async def form_expired(request: Request, exc: FormExpired) -> Response:
        return pages.error(request, 403, "Form expired", errors=exc.errors)

    async def body_refused(request: Request, exc: BodyRefused) -> Response:
        title = "Form too large" if exc.status == 413 else "Form too slow"
        return pages.error(request, exc.status, title)

    async def not_done(request: Request, exc: InvalidRequest) -> Response:
        return pages.error(request, exc.status, "Not done", errors=exc.errors)

    async def store_unavailable(request: Request, exc: StoreUnavailable) -> Response:
        log.warning("console: store unavailable: %s", exc)
        return pages.error(request, 503, "Redis unavailable")

    async def internal(request: Request, exc: Exception) -> Response:
        # No traceback here: Starlette re-raises the exception to the server, which logs it.
        log.error("console: unexpected error on %s %s: %r", request.method, request.url.path, exc)
        response = pages.error(request, 500, "Internal error")
        # Starlette answers this one outside the middleware, so the headers are added here.
        response.raw_headers.extend(SECURITY_HEADERS)
        return response

    return {
        HTTPException: not_found,
        SignedOut: signed_out,
        FormExpired: form_expired,
        BodyRefused: body_refused,
        InvalidRequest: not_done,
        StoreUnavailable: store_unavailable,
        Exception: internal,
    }


def create_console(
    settings: Settings,
    auth: Authenticator,
    dlq: DeadLetterAdmin,
    control: WorkspaceControl,
    overview: Overview,
    *,
    sessions: Sessions | None = None,
    forgetting: Forgetting | None = None,
) -> Starlette:
    """The console app; `sessions` may be given to control the clock in tests."""
    pages = Pages(sessions or Sessions(settings.console, settings.keys), auth)
    if forgetting is None:
        forgetting = Forgetting(
            dlq.redis,
            settings.queue,
            lease_ms=settings.drain.lease_ms,
            triggers=control.triggers,
            enqueue=dlq.queue.enqueue,
        )
    console = Console(settings.workspaces, pages, dlq, control, overview, forgetting)
    timeout_s = settings.listener.body_timeout_s
    routes: list[BaseRoute] = [
        Route(path, _public(handler, timeout_s), methods=[method])
        for method, path, handler in console.public_pages()
    ]
    routes += [
        Route(path, _operator(handler, pages, timeout_s), methods=[method])
        for method, path, handler in console.operator_pages()
    ]
    routes.append(Mount("/console/static", StaticFiles(packages=[("service.console", "static")])))
    return Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders), Middleware(TrailingSlash)],
        exception_handlers=_error_pages(pages),
    )
