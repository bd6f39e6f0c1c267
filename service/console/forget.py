"""The console's forget action: one person's identifiers in, their data out of cioq.

The form takes a workspace and the person's identifiers (one per line: ``id``, ``email``
or ``cio_id``, as ``email:a@b`` or bare); submitting it needs the "cannot be undone" box,
then runs the same forget as ``cioq forget`` and the admin API (`service.store.forget`)
and shows what was removed. The page, like the audit, names the person by digest only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from service.config import Workspace
from service.console.pages import Form, Pages
from service.console.session import Session
from service.errors import InvalidRequest
from service.store.forget import Forgetting

OperatorPage = Callable[[Request, Session, Form], Awaitable[Response]]
#: The form's box that confirms the forget (it cannot be undone).
CONFIRM_FIELD = "irreversible"


class ForgetPages:
    """``GET``/``POST /console/forget``."""

    def __init__(
        self,
        workspaces: tuple[Workspace, ...],
        pages: Pages,
        forgetting: Forgetting,
        workspace_of: Callable[[str], str],
    ) -> None:
        self.workspaces = workspaces
        self.pages = pages
        self.forgetting = forgetting
        self.workspace_of = workspace_of

    def operator_pages(self) -> list[tuple[str, str, OperatorPage]]:
        return [("GET", "/console/forget", self.form), ("POST", "/console/forget", self.run)]

    async def form(self, request: Request, session: Session, form: Form) -> Response:
        return self._form(request, session, 200)

    def _form(self, request: Request, session: Session, status: int, **shown: object) -> Response:
        return self.pages.page(
            request,
            status,
            "forget.html",
            session,
            workspaces=[ws.name for ws in self.workspaces],
            **shown,
        )

    async def run(self, request: Request, session: Session, form: Form) -> Response:
        workspace = self.workspace_of(form.get("workspace"))
        identifiers = [line.strip() for line in form.get("person").splitlines() if line.strip()]
        if form.get(CONFIRM_FIELD) != "yes":
            raise InvalidRequest.of(
                CONFIRM_FIELD, "required", "confirm that the forget cannot be undone"
            )
        result = await self.forgetting.forget(
            workspace,
            identifiers,
            who=session.name,
            delete_upstream=form.get("delete_upstream") == "yes",
        )
        return self.pages.page(
            request, 200, "forgotten.html", session, workspace=workspace, result=result
        )
