"""The console's pages: sign in and out, the overview and lanes, dead letters (their repair
form is `service.console.repair`), the audit.

Each handler gets the Starlette request, the signed-in session (None on public pages) and
the request's form, once `service.console.app` has checked the session and the CSRF token;
it raises `InvalidRequest` for a form it cannot act on, and the console's error table
answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response

from service.config import Workspace, find_workspace
from service.console import views
from service.console.forget import ForgetPages
from service.console.late import LatePages
from service.console.overview import Overview
from service.console.pages import Form, Pages, query_of, redirect
from service.console.repair import RepairPages
from service.console.session import Session
from service.errors import ConfigError, FieldError, InvalidRequest
from service.store.dead_letter_admin import (
    MAY_DELIVER_TWICE,
    DeadLetterAdmin,
    DeadLetterFilter,
    SelectionResult,
)
from service.store.forget import Forgetting
from service.store.late_failures import LateFailures
from service.store.workspace_control import LANES, WorkspaceControl, parse_duration_ms

log = logging.getLogger("cioq.console")

PAGE_SIZE = 50
NOTICES = {"pause": "Lane paused.", "resume": "Lane resumed."}
PAUSE_CHOICES = ("15m", "1h", "4h", "24h", "7d")

#: A page anyone may open: ``handler(request, form)``.
PublicPage = Callable[[Request, Form], Awaitable[Response]]
#: A page for a signed-in operator: ``handler(request, session, form)``.
OperatorPage = Callable[[Request, Session, Form], Awaitable[Response]]


class Console:
    """The page handlers, over the dead-letter admin, lane control and the overview."""

    def __init__(
        self,
        workspaces: tuple[Workspace, ...],
        pages: Pages,
        dlq: DeadLetterAdmin,
        control: WorkspaceControl,
        overview: Overview,
        forgetting: Forgetting,
    ) -> None:
        self.workspaces = workspaces
        self.pages = pages
        self.dlq = dlq
        self.control = control
        self.overview = overview
        self.repair = RepairPages(workspaces, pages, dlq, self._workspace)
        self.forget = ForgetPages(workspaces, pages, forgetting, self._workspace)
        self.late = LatePages(
            workspaces, pages, LateFailures(dlq.redis, dlq.queue), self._workspace
        )

    def public_pages(self) -> list[tuple[str, str, PublicPage]]:
        """(method, path, handler) of the pages before signing in."""
        return [
            ("GET", "/console/sign-in", self.sign_in_form),
            ("POST", "/console/sign-in", self.sign_in),
        ]

    def operator_pages(self) -> list[tuple[str, str, OperatorPage]]:
        """(method, path, handler) of the pages behind a session."""
        dl = "/console/dead-letters"
        return [
            ("GET", "/console", self.index),
            ("POST", "/console/sign-out", self.sign_out),
            ("GET", "/console/overview", self.overview_page),
            ("GET", "/console/overview.json", self.numbers),
            ("POST", "/console/lanes", self.lanes),
            ("GET", dl, self.dead_letters),
            ("POST", f"{dl}/action", self.action),
            ("GET", f"{dl}/{{workspace}}/{{id}}", self.letter),
            *self.repair.operator_pages(),
            *self.forget.operator_pages(),
            *self.late.operator_pages(),
            ("GET", "/console/audit", self.audit),
        ]

    def _workspace(self, name: str) -> str:
        try:
            return find_workspace(self.workspaces, name or "default").name
        except ConfigError:
            raise InvalidRequest(
                [FieldError("workspace", "unknown", "no workspace of that name")], status=404
            ) from None

    # --- sign in and out --------------------------------------------------------------------

    async def index(self, request: Request, session: Session, form: Form) -> Response:
        return redirect("/console/overview")

    async def sign_in_form(self, request: Request, form: Form) -> Response:
        return self.pages.page(request, 200, "sign_in.html", None, refused=False)

    async def sign_in(self, request: Request, form: Form) -> Response:
        key = form.get("key")
        name = self.pages.auth.admin_name(key) if key else None
        if name is None:
            # Ingest keys and wrong keys read the same: the form says nothing about which.
            return self.pages.page(request, 401, "sign_in.html", None, refused=True)
        sessions = self.pages.sessions
        _, cookie = sessions.issue(name)
        secure = request.url.scheme == "https"
        log.info("console: %s signed in", name)
        return redirect("/console/overview", set_cookie=sessions.set_cookie(cookie, secure=secure))

    async def sign_out(self, request: Request, session: Session, form: Form) -> Response:
        return redirect("/console/sign-in", set_cookie=self.pages.sessions.clear_cookie())

    # --- overview and lanes -----------------------------------------------------------------

    async def overview_page(self, request: Request, session: Session, form: Form) -> Response:
        rows = views.overview_rows(await self.overview.read())
        notice = NOTICES.get(query_of(request).get("done"), "")
        return self.pages.page(
            request,
            200,
            "overview.html",
            session,
            rows=rows,
            notice=notice,
            workspaces=[ws.name for ws in self.workspaces],
            lanes=LANES,
            pause_choices=PAUSE_CHOICES,
            updated=views.when(int(time.time() * 1000)),
        )

    async def numbers(self, request: Request, session: Session, form: Form) -> Response:
        rows = views.overview_rows(await self.overview.read())
        body = {"at": views.when(int(time.time() * 1000)), "rows": rows}
        return Response(orjson.dumps(body), media_type="application/json")

    async def lanes(self, request: Request, session: Session, form: Form) -> Response:
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
        return redirect(f"/console/overview?done={action}")

    async def audit(self, request: Request, session: Session, form: Form) -> Response:
        entries = await self.control.audit_list()
        return self.pages.page(
            request, 200, "audit.html", session, entries=entries, when=views.when
        )

    # --- dead letters -----------------------------------------------------------------------

    async def dead_letters(self, request: Request, session: Session, form: Form) -> Response:
        form = query_of(request)
        workspace = self._workspace(form.get("workspace"))
        filters = form.filters()
        flt = DeadLetterFilter.from_fields(filters)
        after = form.get("after") or None
        page = await self.dlq.page(workspace, flt, limit=PAGE_SIZE, after=after)
        next_link = None
        if page.next_after:
            query = {"workspace": workspace, **filters, "after": page.next_after}
            next_link = "/console/dead-letters?" + urlencode(query)
        return self.pages.page(
            request,
            200,
            "dead_letters.html",
            session,
            workspace=workspace,
            workspaces=[ws.name for ws in self.workspaces],
            lanes=[str(lane) for lane in find_workspace(self.workspaces, workspace).lanes],
            filters=filters,
            letters=page.letters,
            next_link=next_link,
            total=await self.dlq.size(workspace),
            when=views.when,
        )

    async def letter(self, request: Request, session: Session, form: Form) -> Response:
        workspace = self._workspace(request.path_params["workspace"])
        stored = await self.dlq.get(workspace, request.path_params["id"])
        if stored is None:
            raise InvalidRequest.of("id", "unknown", "no such dead letter", status=404)
        shown = stored.as_dict()
        payload = orjson.dumps(shown["payload"], option=orjson.OPT_INDENT_2).decode()
        return self.pages.page(
            request,
            200,
            "letter.html",
            session,
            workspace=workspace,
            letter=shown,
            payload=payload,
            when=views.when,
        )

    async def action(self, request: Request, session: Session, form: Form) -> Response:
        """Replay or purge: without ``confirm`` a dry run showing the count, then the real one."""
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
        outcome = await self._act(
            verb, workspace, flt, dry_run=not confirmed, twice=twice, who=session.name
        )
        if not confirmed:
            return self.pages.page(
                request,
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
        return self.pages.page(
            request, 200, "result.html", session, workspace=workspace, verb=verb, outcome=outcome
        )

    async def _act(
        self,
        verb: str,
        workspace: str,
        flt: DeadLetterFilter,
        *,
        dry_run: bool,
        twice: bool,
        who: str,
    ) -> SelectionResult:
        if verb == "replay":
            return await self.dlq.replay(
                workspace, flt, dry_run=dry_run, may_deliver_twice=twice, who=who
            )
        return await self.dlq.purge(workspace, flt, dry_run=dry_run, who=who)
