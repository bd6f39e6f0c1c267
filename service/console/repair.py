"""The console's repair form: a dead letter's payload as JSON, Customer.io's error beside it.

Saving checks the fix with the lane's ingest rules and replays it
(`service.store.dead_letter_repair`, as the admin API's ``PATCH`` and ``cioq dlq edit``
do). A fix that is not JSON or still breaks a rule comes back on the same form, the
operator's text kept and every broken rule named; an App send or broadcast trigger needs
the "may deliver twice" box, as its replay does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from service.config import Workspace, find_workspace
from service.console import views
from service.console.fixes import apply_fix
from service.console.pages import Form, Pages
from service.console.session import Session
from service.errors import FieldError, InvalidRequest
from service.jobs import job_kind
from service.store.dead_letter_admin import MAY_DELIVER_TWICE, DeadLetterAdmin
from service.store.dead_letter_repair import LetterRepair
from service.store.dead_letters import StoredDeadLetter

OperatorPage = Callable[[Request, Session, Form], Awaitable[Response]]


class RepairPages:
    """``GET``/``POST /console/dead-letters/{workspace}/{id}/edit``."""

    def __init__(
        self,
        workspaces: tuple[Workspace, ...],
        pages: Pages,
        dlq: DeadLetterAdmin,
        workspace_of: Callable[[str], str],
    ) -> None:
        self.workspaces = workspaces
        self.pages = pages
        self.dlq = dlq
        self.repairs = LetterRepair(dlq)
        self.workspace_of = workspace_of

    def operator_pages(self) -> list[tuple[str, str, OperatorPage]]:
        path = "/console/dead-letters/{workspace}/{id}/edit"
        return [("GET", path, self.form), ("POST", path, self.save)]

    async def _letter(self, request: Request) -> tuple[str, StoredDeadLetter]:
        workspace = self.workspace_of(request.path_params["workspace"])
        stored = await self.dlq.get(workspace, request.path_params["id"])
        if stored is None:
            raise InvalidRequest.of("id", "unknown", "no such dead letter", status=404)
        return workspace, stored

    async def form(self, request: Request, session: Session, form: Form) -> Response:
        workspace, stored = await self._letter(request)
        shown = stored.as_dict()
        text = orjson.dumps(shown["payload"], option=orjson.OPT_INDENT_2).decode()
        return self._page(request, session, workspace, stored, text, [], 200)

    async def save(self, request: Request, session: Session, form: Form) -> Response:
        workspace, stored = await self._letter(request)
        text = form.get("payload")

        async def repair(payload: Any) -> Response:
            strict = find_workspace(self.workspaces, workspace).strict_validation
            done = await self.repairs.repair(
                workspace,
                stored.id,
                payload,
                strict=strict,
                who=session.name,
                may_deliver_twice=form.get(MAY_DELIVER_TWICE) == "yes",
            )
            return self.pages.page(
                request,
                200,
                "repaired.html",
                session,
                workspace=workspace,
                letter_id=done.id,
                changes=done.changes,
            )

        def again(errors: list[FieldError], status: int) -> Response:
            return self._page(request, session, workspace, stored, text, errors, status)

        return await apply_fix(text, repair, again)

    def _page(
        self,
        request: Request,
        session: Session,
        workspace: str,
        stored: StoredDeadLetter,
        text: str,
        errors: list[FieldError],
        status: int,
    ) -> Response:
        return self.pages.page(
            request,
            status,
            "repair.html",
            session,
            workspace=workspace,
            letter=stored.as_dict(),
            text=text,
            errors=errors,
            sends=job_kind(stored.letter.kind).at_most_once,
            editable=job_kind(stored.letter.kind).repair is not None,
            when=views.when,
        )
