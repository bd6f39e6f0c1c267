"""The operator console: server-rendered pages under ``/console`` for admin keys only.

The api hands every ``/console`` request here, ahead of its JSON router. Signing in
takes an admin key once and sets a signed session cookie (`service.console.session`);
every POST must carry the session's CSRF token, or nothing happens. Pages are Jinja2
templates with autoescaping on, so whatever a producer sent (payloads, identifiers,
event names, Customer.io's messages) is shown as text, never markup; the
Content-Security-Policy allows no inline script and no other origin, so even a value that
slipped through could not run. Producer values are never put into an ``href``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
import orjson

from service.config import Settings
from service.console import views
from service.console.session import Session, Sessions, cookie_from
from service.errors import ConfigError, FieldError, InvalidRequest, StoreUnavailable
from service.metrics.overview import Overview
from service.store.dead_letter_admin import (
    FILTER_FIELDS,
    MAY_DELIVER_TWICE,
    DeadLetterAdmin,
    DeadLetterFilter,
    SelectionResult,
)
from service.store.workspace_control import LANES, WorkspaceControl, parse_duration_ms
from service.web.auth import Authenticator
from service.web.http import (
    BodyRefused,
    Receive,
    Request,
    Response,
    Route,
    Router,
    Scope,
    Send,
    base_url_of,
    read_body,
    send_response,
    split_path,
)

log = logging.getLogger("cioq.console")

MAX_FORM_BYTES = 256_000
PAGE_SIZE = 50
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
HTML = (b"content-type", b"text/html; charset=utf-8")
STATIC = {"console.css": b"text/css; charset=utf-8", "console.js": b"text/javascript"}
NOTICES = {"pause": "Lane paused.", "resume": "Lane resumed."}
PAUSE_CHOICES = ("15m", "1h", "4h", "24h", "7d")

ConsoleHandler = Callable[[Request, Any], Awaitable[Response]]


class Form:
    """A urlencoded form body (or a query string), field → values."""

    def __init__(self, text: str) -> None:
        self.values = parse_qs(text, keep_blank_values=True)

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, [default])[-1].strip()

    def all(self, name: str) -> list[str]:
        return [v for v in self.values.get(name, []) if v]

    def filters(self) -> dict[str, str]:
        return {name: self.get(name) for name in FILTER_FIELDS if self.get(name)}


def _redirect(location: str, *extra: tuple[bytes, bytes]) -> Response:
    return Response(303, b"", ((b"location", location.encode()), *extra))


class Console:
    """Routes, session checks and rendering of the console pages."""

    def __init__(
        self,
        settings: Settings,
        auth: Authenticator,
        dlq: DeadLetterAdmin,
        control: WorkspaceControl,
        overview: Overview,
        *,
        sessions: Sessions | None = None,
    ) -> None:
        self.settings = settings
        self.auth = auth
        self.dlq = dlq
        self.control = control
        self.overview = overview
        self.sessions = sessions or Sessions(settings)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("service.console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        c = "console"
        dl = (c, "dead-letters")
        self.router = Router(
            [
                Route("GET", (c,), "index", self.index, auth="session"),
                Route("GET", (c, "sign-in"), "sign_in_form", self.sign_in_form, auth="public"),
                Route("POST", (c, "sign-in"), "sign_in", self.sign_in, auth="public"),
                Route("POST", (c, "sign-out"), "sign_out", self.sign_out, auth="session"),
                Route("GET", (c, "overview"), "overview", self.overview_page, auth="session"),
                Route("GET", (c, "overview.json"), "numbers", self.numbers, auth="session"),
                Route("POST", (c, "lanes"), "lanes", self.lanes, auth="session"),
                Route("GET", dl, "dead_letters", self.dead_letters, auth="session"),
                Route("POST", (*dl, "action"), "action", self.action, auth="session"),
                Route("GET", (*dl, "{workspace}", "{id}"), "letter", self.letter, auth="session"),
                Route("GET", (c, "audit"), "audit", self.audit, auth="session"),
                Route("GET", (c, "static", "{name}"), "static", self.static, auth="public"),
            ]
        )

    # --- plumbing ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._dispatch(scope, receive)
        await send_response(
            send, Response(response.status, response.body, (*response.headers, *SECURITY_HEADERS))
        )

    async def _dispatch(self, scope: Scope, receive: Receive) -> Response:
        method: str = scope["method"]
        segments = split_path(scope.get("raw_path") or scope["path"].encode())
        route, params, _ = self.router.match(method, segments)
        headers = dict(scope["headers"])
        session = self._session(headers)
        if route is None:
            return self._page(404, "error.html", session, title="Not found", errors=[])
        if route.auth == "session" and session is None:
            if method == "GET":
                return _redirect("/console/sign-in")
            return self._page(403, "error.html", None, title="Signed out", errors=[])
        try:
            body = await read_body(
                receive, headers, max_bytes=MAX_FORM_BYTES, timeout_s=self.settings.body_timeout_s
            )
        except BodyRefused as exc:
            title = "Form too large" if exc.status == 413 else "Form too slow"
            return self._page(exc.status, "error.html", session, title=title, errors=[])
        request = Request(
            method,
            segments,
            scope.get("query_string", b"").decode("latin-1"),
            headers,
            body,
            params,
            route.name,
            base_url_of(scope),
        )
        if method == "POST" and session is not None and route.auth == "session":
            token = Form(body.decode("utf-8", "replace")).get("csrf")
            if not self.sessions.csrf_ok(session, token):
                return self._page(
                    403,
                    "error.html",
                    session,
                    title="Form expired",
                    errors=[
                        FieldError(
                            "csrf",
                            "invalid",
                            "this form did not come from your session; "
                            "reload the page and try again",
                        )
                    ],
                )
        try:
            return await route.handler(request, session)
        except InvalidRequest as exc:
            return self._page(
                exc.status, "error.html", session, title="Not done", errors=exc.errors
            )
        except StoreUnavailable as exc:
            log.warning("console: store unavailable: %s", exc)
            return self._page(503, "error.html", session, title="Redis unavailable", errors=[])
        except Exception:
            log.exception("console: unexpected error on %s %s", method, route.name)
            return self._page(500, "error.html", session, title="Internal error", errors=[])

    def _session(self, headers: dict[bytes, bytes]) -> Session | None:
        raw = headers.get(b"cookie")
        session = self.sessions.read(cookie_from(raw.decode("latin-1") if raw else None))
        # A key removed from CIOQ_ADMIN_KEYS ends its sessions at the next restart.
        if session is None or session.name not in self.auth.admin_names:
            return None
        return session

    def _page(
        self, status: int, template: str, session: Session | None, **context: Any
    ) -> Response:
        html = self.templates.get_template(template).render(
            session=session,
            csrf=self.sessions.csrf_token(session) if session else "",
            **context,
        )
        return Response(status, html.encode(), (HTML,))

    def _workspace(self, name: str) -> str:
        try:
            return self.settings.workspace(name or "default").name
        except ConfigError:
            raise InvalidRequest(
                [FieldError("workspace", "unknown", "no workspace of that name")], status=404
            ) from None

    # --- sign in and out --------------------------------------------------------------------

    async def index(self, request: Request, session: Session) -> Response:
        return _redirect("/console/overview")

    async def sign_in_form(self, request: Request, session: Session | None) -> Response:
        return self._page(200, "sign_in.html", None, refused=False)

    async def sign_in(self, request: Request, _: Session | None) -> Response:
        key = Form(request.body.decode("utf-8", "replace")).get("key")
        name = self.auth.admin_name(key) if key else None
        if name is None:
            # Ingest keys and wrong keys read the same: the form says nothing about which.
            return self._page(401, "sign_in.html", None, refused=True)
        _, cookie = self.sessions.issue(name)
        secure = request.base_url.startswith("https://")
        set_cookie = (b"set-cookie", self.sessions.set_cookie(cookie, secure=secure))
        log.info("console: %s signed in", name)
        return _redirect("/console/overview", set_cookie)

    async def sign_out(self, request: Request, session: Session) -> Response:
        return _redirect("/console/sign-in", (b"set-cookie", self.sessions.clear_cookie()))

    # --- overview and lanes -----------------------------------------------------------------

    async def overview_page(self, request: Request, session: Session) -> Response:
        rows = views.overview_rows(await self.overview.read())
        notice = NOTICES.get(Form(request.query).get("done"), "")
        return self._page(
            200,
            "overview.html",
            session,
            rows=rows,
            notice=notice,
            workspaces=[ws.name for ws in self.settings.workspaces],
            lanes=LANES,
            pause_choices=PAUSE_CHOICES,
            updated=views.when(int(time.time() * 1000)),
        )

    async def numbers(self, request: Request, session: Session) -> Response:
        rows = views.overview_rows(await self.overview.read())
        body = {"at": views.when(int(time.time() * 1000)), "rows": rows}
        return Response(200, orjson.dumps(body), ((b"content-type", b"application/json"),))

    async def lanes(self, request: Request, session: Session) -> Response:
        form = Form(request.body.decode("utf-8", "replace"))
        workspace = self._workspace(form.get("workspace"))
        lane = form.get("lane", "track")
        action = form.get("action")
        if action == "pause":
            duration_ms = parse_duration_ms(form.get("for", "1h"))
            await self.control.pause(
                workspace,
                lane,
                reason=form.get("reason"),
                who=session.name,
                duration_ms=duration_ms,
            )
        elif action == "resume":
            await self.control.resume(workspace, lane, reason=form.get("reason"), who=session.name)
        else:
            raise InvalidRequest.of("action", "choice", "choose pause or resume")
        return _redirect(f"/console/overview?done={action}")

    async def audit(self, request: Request, session: Session) -> Response:
        entries = await self.control.audit_list()
        return self._page(200, "audit.html", session, entries=entries, when=views.when)

    # --- dead letters -----------------------------------------------------------------------

    async def dead_letters(self, request: Request, session: Session) -> Response:
        form = Form(request.query)
        workspace = self._workspace(form.get("workspace"))
        filters = form.filters()
        flt = DeadLetterFilter.from_fields(filters)
        after = form.get("after") or None
        page = await self.dlq.page(workspace, flt, limit=PAGE_SIZE, after=after)
        next_link = None
        if page.next_after:
            query = {"workspace": workspace, **filters, "after": page.next_after}
            next_link = "/console/dead-letters?" + urlencode(query)
        return self._page(
            200,
            "dead_letters.html",
            session,
            workspace=workspace,
            workspaces=[ws.name for ws in self.settings.workspaces],
            lanes=[str(lane) for lane in self.settings.workspace(workspace).lanes],
            filters=filters,
            letters=page.letters,
            next_link=next_link,
            total=await self.dlq.size(workspace),
            when=views.when,
        )

    async def letter(self, request: Request, session: Session) -> Response:
        workspace = self._workspace(request.params[0])
        stored = await self.dlq.get(workspace, request.params[1])
        if stored is None:
            raise InvalidRequest.of("id", "unknown", "no such dead letter", status=404)
        shown = stored.as_dict()
        payload = orjson.dumps(shown["payload"], option=orjson.OPT_INDENT_2).decode()
        return self._page(
            200,
            "letter.html",
            session,
            workspace=workspace,
            letter=shown,
            payload=payload,
            when=views.when,
        )

    async def action(self, request: Request, session: Session) -> Response:
        """Replay or purge: without ``confirm`` a dry run showing the count, then the real one."""
        form = Form(request.body.decode("utf-8", "replace"))
        workspace = self._workspace(form.get("workspace"))
        verb, _, scope = form.get("do").partition("-")
        if verb not in ("replay", "purge") or scope not in ("selected", "matching"):
            raise InvalidRequest.of("do", "choice", "choose replay or purge")
        ids = tuple(form.all("ids")) if scope == "selected" else ()
        filters = form.filters() if scope == "matching" else {}
        if scope == "selected" and not ids:
            raise InvalidRequest.of("ids", "required", "select at least one letter")
        flt = DeadLetterFilter.from_fields(filters, ids)
        confirmed = form.get("confirm") == "yes"
        twice = form.get(MAY_DELIVER_TWICE) == "yes"
        outcome = await self._act(verb, workspace, flt, dry_run=not confirmed, twice=twice)
        if not confirmed:
            return self._page(
                200,
                "confirm.html",
                session,
                workspace=workspace,
                verb=verb,
                scope=scope,
                ids=ids,
                filters=filters,
                matched=outcome.matched,
                sends=outcome.sends,
            )
        selection = f"ids {', '.join(ids)}" if ids else _describe(filters)
        past = "replayed" if verb == "replay" else "purged"
        detail = f"{past} {outcome.done} of {outcome.matched} matched letters ({selection})"
        await self.control.record(session.name, verb, workspace, "", detail)
        return self._page(
            200, "result.html", session, workspace=workspace, verb=verb, outcome=outcome
        )

    async def _act(
        self, verb: str, workspace: str, flt: DeadLetterFilter, *, dry_run: bool, twice: bool
    ) -> SelectionResult:
        if verb == "replay":
            return await self.dlq.replay(workspace, flt, dry_run=dry_run, may_deliver_twice=twice)
        return await self.dlq.purge(workspace, flt, dry_run=dry_run)

    async def static(self, request: Request, _: Session | None) -> Response:
        name = request.params[0]
        if name not in STATIC:
            return Response(404, b"", ((b"content-type", b"text/plain"),))
        body = resources.files("service.console").joinpath("static", name).read_bytes()
        return Response(200, body, ((b"content-type", STATIC[name]),))


def _describe(filters: dict[str, str]) -> str:
    if not filters:
        return "every letter"
    return ", ".join(f"{name}={value}" for name, value in filters.items())
