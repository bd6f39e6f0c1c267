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
from urllib.parse import parse_qs

from service.api.admin import workspace_in_path
from service.config import Workspace
from service.errors import FieldError, InvalidRequest
from service.store.dead_letter_admin import check_ids
from service.store.late_failures import LateFailures, LateFilter
from service.web.http import Request, Response, Route, json_response

MAX_PAGE = 1000


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
        query = {k: v[-1] for k, v in parse_qs(request.query, keep_blank_values=True).items()}
        limit_text = query.get("limit", "100")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
            raise InvalidRequest(
                [FieldError("limit", "range", f"limit must be 1..{MAX_PAGE}", MAX_PAGE)]
            )
        after = query.get("after") or None
        if after is not None:
            check_ids((after,))
        flt = LateFilter.from_fields(query)
        page = await self.late.page(workspace, flt, limit=int(limit_text), after=after)
        return json_response(
            200,
            {
                "late_failures": [f.as_dict() for f in page.failures],
                "next_after": page.next_after,
            },
        )

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
