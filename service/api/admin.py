"""The admin HTTP API: dead-letter list, show, replay, purge and repair, behind admin keys only.

Ingest keys never open these routes and admin keys never open ingest routes, so a
leaked producer key cannot read or replay other people's dead letters. The routes are the
JSON API's (in ``/openapi.json``, raw-path routed, keys checked before the body is read), so
they are served by its dispatcher and answer errors through its table
(`service.web.errors.JSON_ERRORS`); the HTML console is the Starlette app.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.api.paging import PageQuery, page_response
from service.config import Workspace, find_workspace
from service.errors import ConfigError, FieldError, InvalidRequest
from service.store.dead_letter_admin import (
    MAY_DELIVER_TWICE,
    DeadLetterAdmin,
    DeadLetterFilter,
    SelectionResult,
    check_ids,
)
from service.store.dead_letter_repair import FieldRule, LetterRepair
from service.store.forget import Forgetting, parse_people
from service.web.http import Request, Response, Route, json_response


def _outcome(outcome: SelectionResult, verb: str) -> Response:
    body = {"matched": outcome.matched, verb: outcome.done, "dry_run": outcome.dry_run}
    if outcome.dropped:  # only a replay that met tombstones has any (service.store.tombstones)
        body["dropped_forgotten"] = outcome.dropped
    return json_response(200, body)


def workspace_in_path(workspaces: tuple[Workspace, ...], request: Request) -> Workspace:
    """The workspace an admin route's first path parameter names; 404 when none is."""
    name = request.params[0]
    try:
        return find_workspace(workspaces, name)
    except ConfigError:
        raise InvalidRequest(
            [FieldError("workspace", "unknown", f"no workspace named {name!r}")], status=404
        ) from None


class Admin:
    """Handlers for ``/admin/v1``; each takes the workspace from the path."""

    def __init__(
        self,
        dlq: DeadLetterAdmin,
        workspaces: tuple[Workspace, ...],
        who: Callable[[Request], str] = lambda _: "admin",
        forgetting: Forgetting | None = None,
    ) -> None:
        self.dlq = dlq
        self.forgetting = forgetting
        self.workspace_list = workspaces
        self.repairs = LetterRepair(dlq)
        #: The name the audit gives the caller (its admin key's).
        self.who = who

    def routes(self) -> list[Route]:
        ws = ("admin", "v1", "workspaces")
        dl = (*ws, "{workspace}", "dead-letters")
        return [
            Route("GET", ws, "admin.workspaces", self.workspaces, auth="admin"),
            Route("GET", dl, "admin.dlq_list", self.list, auth="admin"),
            Route("GET", (*dl, "summary"), "admin.dlq_summary", self.summary, auth="admin"),
            Route("POST", (*dl, "replay"), "admin.dlq_replay", self.replay, auth="admin"),
            Route("POST", (*dl, "purge"), "admin.dlq_purge", self.purge, auth="admin"),
            Route("POST", (*dl, "repair"), "admin.dlq_bulk_repair", self.bulk_repair, auth="admin"),
            Route("GET", (*dl, "{id}"), "admin.dlq_show", self.show, auth="admin"),
            Route("PATCH", (*dl, "{id}"), "admin.dlq_repair", self.repair, auth="admin"),
            Route(
                "POST",
                (*ws, "{workspace}", "people", "forget"),
                "admin.forget",
                self.forget,
                auth="admin",
            ),
        ]

    def _workspace(self, request: Request) -> str:
        return self._find(request).name

    def _find(self, request: Request) -> Workspace:
        return workspace_in_path(self.workspace_list, request)

    async def workspaces(self, request: Request, _: Any) -> Response:
        out = [
            {"name": ws.name, "site_id": ws.site_id, "dead_letters": await self.dlq.size(ws.name)}
            for ws in self.workspace_list
        ]
        return json_response(200, {"workspaces": out})

    async def list(self, request: Request, _: Any) -> Response:
        workspace = self._workspace(request)
        asked = PageQuery.parse(request)
        flt = DeadLetterFilter.from_fields(asked.filter_fields)
        page = await self.dlq.page(workspace, flt, limit=asked.limit, after=asked.after)
        return page_response("dead_letters", page.letters, page.next_after)

    async def summary(self, request: Request, _: Any) -> Response:
        workspace = self._workspace(request)
        by_reason = await self.dlq.summary(workspace)
        return json_response(200, {"size": sum(by_reason.values()), "by_reason": by_reason})

    async def show(self, request: Request, _: Any) -> Response:
        workspace = self._workspace(request)
        stored = await self.dlq.get(workspace, request.params[1])
        if stored is None:
            raise InvalidRequest.of("id", "unknown", "no such dead letter", status=404)
        return json_response(200, stored.as_dict())

    async def replay(self, request: Request, _: Any) -> Response:
        workspace = self._workspace(request)
        flt, dry_run = self._selection(request)
        twice = _twice(_object(request))
        outcome = await self.dlq.replay(
            workspace, flt, dry_run=dry_run, may_deliver_twice=twice, who=self.who(request)
        )
        return _outcome(outcome, "replayed")

    async def repair(self, request: Request, _: Any) -> Response:
        """``{"payload": {...}}``: check the fix as a new call, replay it, audit the diff."""
        ws = self._find(request)
        body = _object(request)
        unknown = sorted(set(body) - {"payload", MAY_DELIVER_TWICE})
        if unknown:
            raise InvalidRequest.of(unknown[0], "unknown_field", "a repair takes payload")
        if "payload" not in body:
            raise InvalidRequest.of("payload", "required", "send the fixed payload as payload")
        done = await self.repairs.repair(
            ws.name,
            check_ids((request.params[1],))[0],
            body["payload"],
            strict=ws.strict_validation,
            who=self.who(request),
            may_deliver_twice=_twice(body),
        )
        return json_response(200, {"id": done.id, "replayed": True, "changes": done.changes})

    async def bulk_repair(self, request: Request, _: Any) -> Response:
        """Drop or rename one field on every selected letter that has it (``dry_run`` first)."""
        ws = self._find(request)
        body = _object(request)
        rule = FieldRule.parse(body.get("action"), body.get("field"), body.get("to"))
        selection = {k: v for k, v in body.items() if k not in ("action", "field", "to")}
        flt, dry_run = self._selection(request, selection)
        outcome = await self.repairs.bulk(
            ws.name,
            flt,
            rule,
            strict=ws.strict_validation,
            who=self.who(request),
            dry_run=dry_run,
            may_deliver_twice=_twice(body),
        )
        return json_response(200, outcome.as_dict())

    async def forget(self, request: Request, _: Any) -> Response:
        """``{"person": "<identifier>" | [...], "all_shards": false, "delete_upstream":
        false}``: forget one person (and queue their delete to Customer.io)."""
        workspace = self._workspace(request)
        body = _object(request)
        flags = ("all_shards", "delete_upstream")
        unknown = sorted(set(body) - {"person", *flags})
        if unknown:
            raise InvalidRequest.of(
                unknown[0], "unknown_field", "forget takes person, all_shards, delete_upstream"
            )
        for flag in flags:
            if not isinstance(body.get(flag, False), bool):
                raise InvalidRequest.of(flag, "type", f"{flag} must be true or false")
        assert self.forgetting is not None  # the app builds it
        result = await self.forgetting.forget(
            workspace,
            parse_people(body.get("person")),
            who=self.who(request),
            all_shards=bool(body.get("all_shards", False)),
            delete_upstream=bool(body.get("delete_upstream", False)),
        )
        return json_response(200, result.as_dict())

    async def purge(self, request: Request, _: Any) -> Response:
        workspace = self._workspace(request)
        flt, dry_run = self._selection(request)
        outcome = await self.dlq.purge(workspace, flt, dry_run=dry_run, who=self.who(request))
        return _outcome(outcome, "purged")

    @staticmethod
    def _selection(
        request: Request, fields: dict[str, Any] | None = None
    ) -> tuple[DeadLetterFilter, bool]:
        """The letters a replay/purge acts on; an empty selection needs ``"all": true``."""
        body = _object(request) if fields is None else fields
        ids = body.get("ids", [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InvalidRequest.of("ids", "type", "ids must be a list of strings")
        for flag in ("all", "dry_run"):
            if not isinstance(body.get(flag, False), bool):
                raise InvalidRequest.of(flag, "type", f"{flag} must be true or false")
        flt = DeadLetterFilter.from_fields(body, tuple(ids))
        if flt.is_empty and not body.get("all", False):
            raise InvalidRequest(
                [
                    FieldError(
                        "filter",
                        "required",
                        'name ids or a filter, or send "all": true to act on every letter',
                    )
                ]
            )
        return flt, bool(body.get("dry_run", False))


def _object(request: Request) -> dict[str, Any]:
    body = request.json() or {}
    if not isinstance(body, dict):
        raise InvalidRequest.of("body", "type", "the body must be a JSON object")
    return body


def _twice(body: dict[str, Any]) -> bool:
    twice = body.get(MAY_DELIVER_TWICE, False)
    if not isinstance(twice, bool):
        raise InvalidRequest.of(
            MAY_DELIVER_TWICE, "type", f"{MAY_DELIVER_TWICE} must be true or false"
        )
    return twice
