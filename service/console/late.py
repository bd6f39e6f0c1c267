"""The console's late failures: a filtered list, one failure with its job, and a re-send.

Calls Customer.io accepted and failed afterwards (docs/late-failures.md), read through
`service.store.late_failures` as ``cioq late`` and the admin API read them. A failure tied
to a job shows the job's payload in a form: saving sends the corrected call again through
the normal lanes, once and audited; a fix that is not JSON or breaks a rule comes back on
the same form with every broken rule named.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response

from service.config import Workspace, find_workspace
from service.console import views
from service.console.fixes import apply_fix
from service.console.pages import Form, Pages, query_of
from service.console.session import Session
from service.errors import FieldError, InvalidRequest
from service.store.late_failures import (
    FAILURE_TYPES,
    UNLINKED,
    LateFailure,
    LateFailures,
    LateFilter,
)

OperatorPage = Callable[[Request, Session, Form], Awaitable[Response]]
#: Failures per page.
PAGE_SIZE = 100


class LatePages:
    """``/console/late-failures``, ``.../{workspace}/{id}`` and its ``resend``."""

    def __init__(
        self,
        workspaces: tuple[Workspace, ...],
        pages: Pages,
        late: LateFailures,
        workspace_of: Callable[[str], str],
    ) -> None:
        self.workspaces = workspaces
        self.pages = pages
        self.late = late
        self.workspace_of = workspace_of

    def operator_pages(self) -> list[tuple[str, str, OperatorPage]]:
        base = "/console/late-failures"
        one = f"{base}/{{workspace}}/{{id}}"
        return [
            ("GET", base, self.failures),
            ("GET", one, self.show),
            ("POST", f"{one}/resend", self.resend),
        ]

    async def failures(self, request: Request, session: Session, form: Form) -> Response:
        form = query_of(request)
        workspace = self.workspace_of(form.get("workspace"))
        filters = {name: form.get(name) for name in LateFilter.FIELDS if form.get(name)}
        flt = LateFilter.from_fields(filters)
        page = await self.late.page(
            workspace, flt, limit=PAGE_SIZE, after=form.get("after") or None
        )
        next_link = None
        if page.next_after:
            query = {"workspace": workspace, **filters, "after": page.next_after}
            next_link = "/console/late-failures?" + urlencode(query)
        lanes = [str(lane) for lane in find_workspace(self.workspaces, workspace).lanes]
        return self.pages.page(
            request,
            200,
            "late_failures.html",
            session,
            workspace=workspace,
            workspaces=[ws.name for ws in self.workspaces],
            lanes=[*lanes, UNLINKED],
            types=FAILURE_TYPES,
            filters=filters,
            failures=[f.as_dict(payload=False) for f in page.failures],
            next_link=next_link,
            total=await self.late.size(workspace),
            when=views.when,
        )

    async def _failure(self, request: Request) -> tuple[str, LateFailure]:
        workspace = self.workspace_of(request.path_params["workspace"])
        failure = await self.late.get(workspace, request.path_params["id"])
        if failure is None:
            raise InvalidRequest.of("id", "unknown", "no such late failure", status=404)
        return workspace, failure

    async def show(self, request: Request, session: Session, form: Form) -> Response:
        workspace, failure = await self._failure(request)
        shown = failure.as_dict()
        text = orjson.dumps(shown["payload"], option=orjson.OPT_INDENT_2).decode()
        return self._page(request, session, workspace, failure, text, [], 200)

    async def resend(self, request: Request, session: Session, form: Form) -> Response:
        workspace, failure = await self._failure(request)
        text = form.get("payload")

        async def resend(payload: Any) -> Response:
            strict = find_workspace(self.workspaces, workspace).strict_validation
            await self.late.resend(workspace, failure.id, payload, strict=strict, who=session.name)
            _, resent = await self._failure(request)
            return self._page(request, session, workspace, resent, text, [], 200, done=True)

        def again(errors: list[FieldError], status: int) -> Response:
            return self._page(request, session, workspace, failure, text, errors, status)

        return await apply_fix(text, resend, again)

    def _page(
        self,
        request: Request,
        session: Session,
        workspace: str,
        failure: LateFailure,
        text: str,
        errors: list[FieldError],
        status: int,
        *,
        done: bool = False,
    ) -> Response:
        shown = failure.as_dict()
        activity = orjson.dumps(shown["activity"], option=orjson.OPT_INDENT_2).decode()
        return self.pages.page(
            request,
            status,
            "late_failure.html",
            session,
            workspace=workspace,
            failure=shown,
            activity=activity,
            text=text,
            errors=errors,
            done=done,
            when=views.when,
        )
