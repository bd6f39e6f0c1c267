"""The admin API's late failures: list, show and re-send, behind admin keys only.

``GET /admin/v1/workspaces/{ws}/late-failures`` (the dead-letter filters: lane, producer,
type, since, until; ``limit``, ``after``), ``GET .../late-failures/{id}`` and
``POST .../late-failures/{id}/resend`` (``{"payload": {...}}``, or no body to send the job
as it was). They read and write through `service.store.late_failures`, as ``cioq late`` and
the console do, so every surface shows the same records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.api.admin import workspace_in_path
from service.api.paging import PageQuery, page_response
from service.config import Workspace
from service.errors import InvalidRequest
from service.store.late_failures import LateFailures, LateFilter
from service.web.http import Request, Response, Route, json_response


class LateAdmin:
    """Handlers for ``/admin/v1/workspaces/{workspace}/late-failures``."""

    def __init__(
        self,
        late: LateFailures,
        workspaces: tuple[Workspace, ...],
        who: Callable[[Request], str] = lambda _: "admin",
    ) -> None:
        self.late = late
        self.workspace_list = workspaces
        self.who = who

    def routes(self) -> list[Route]:
        base = ("admin", "v1", "workspaces", "{workspace}", "late-failures")
        return [
            Route("GET", base, "admin.late_list", self.list, auth="admin"),
            Route("GET", (*base, "{id}"), "admin.late_show", self.show, auth="admin"),
            Route(
                "POST", (*base, "{id}", "resend"), "admin.late_resend", self.resend, auth="admin"
            ),
        ]

    def _find(self, request: Request) -> Workspace:
        return workspace_in_path(self.workspace_list, request)

    async def list(self, request: Request, _: Any) -> Response:
        workspace = self._find(request).name
        asked = PageQuery.parse(request)
        flt = LateFilter.from_fields(asked.filter_fields)
        page = await self.late.page(workspace, flt, limit=asked.limit, after=asked.after)
        return page_response("late_failures", page.failures, page.next_after)

    async def show(self, request: Request, _: Any) -> Response:
        workspace = self._find(request).name
        failure = await self.late.get(workspace, request.params[1])
        if failure is None:
            raise InvalidRequest.of("id", "unknown", "no such late failure", status=404)
        return json_response(200, failure.as_dict())

    async def resend(self, request: Request, _: Any) -> Response:
        """``{"payload": {...}}`` (the corrected call) or ``{}``: queue it once, audited."""
        ws = self._find(request)
        body = request.json() or {}
        if not isinstance(body, dict):
            raise InvalidRequest.of("body", "type", "the body must be a JSON object")
        unknown = sorted(set(body) - {"payload"})
        if unknown:
            raise InvalidRequest.of(unknown[0], "unknown_field", "a re-send takes payload")
        done = await self.late.resend(
            ws.name,
            request.params[1],
            body.get("payload"),
            strict=ws.strict_validation,
            who=self.who(request),
        )
        return json_response(
            200, {"id": done.id, "job_id": done.job_id, "resent": True, "changes": done.changes}
        )
