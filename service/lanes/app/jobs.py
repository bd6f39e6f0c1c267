"""The App lane's jobs: App API sends and broadcast triggers, each sent alone."""

from __future__ import annotations

from typing import Any

from service.errors import FieldError
from service.jobs import Job, Lane, RepairRules, identifier_values, request_job, request_kind
from service.lanes.app.validation import validate_send, validate_trigger

#: Stream entry field holding an App API request envelope (a send or a broadcast trigger),
#: sent alone: ``{"id","method","path","body","limit","bucket","route","op_type"}``.
FIELD_APP = b"a"
#: The route prefix of a broadcast trigger: App jobs routed so live in `Lane.BROADCASTS`.
BROADCAST_ROUTE = "broadcast:"


def app_job(
    job_id: str,
    path: str,
    body: Any,
    *,
    limit: str,
    route: str,
    op_type: str,
    bucket: str = "",
) -> Job:
    """Wrap a validated App API send or trigger as a job: one request, sent alone.

    `job_id` names the job's outcome record; `limit` and `bucket` name its rate budget.
    """
    request = {
        "id": job_id,
        "method": "POST",
        "path": path,
        "body": body,
        "limit": limit,
        "bucket": bucket,
    }
    return request_job("app", request, route=route, op_type=op_type)


def _subjects(data: Any) -> set[str]:
    """The job id, the broadcast, the person sent to."""
    found = {str(data.get("id", "")), str(data.get("route", ""))}
    body = data.get("body")
    return found | identifier_values(body if isinstance(body, dict) else {})


def _lane_of(route: str) -> Lane:
    return Lane.BROADCASTS if route.startswith(BROADCAST_ROUTE) else Lane.APP


_SEND_PATH = "/v1/send/"


def _check(envelope: Any, strict: bool) -> list[FieldError]:
    """Ingest's rules for the request body of a send or trigger (named ``body.<field>``)."""
    if not isinstance(envelope, dict):
        return [FieldError("payload", "type", "the payload must be a JSON object")]
    path, body = str(envelope.get("path", "")), envelope.get("body")
    if path.startswith(_SEND_PATH):
        errors = validate_send(path.removeprefix(_SEND_PATH), body, strict=strict)
    else:
        errors = validate_trigger(body, strict=strict)
    return [
        FieldError(
            e.field if e.field == "body" else f"body.{e.field}",
            e.rule,
            e.message,
            e.limit,
            e.actual,
        )
        for e in errors
    ]


APP = request_kind(
    "app",
    FIELD_APP,
    Lane.APP,
    subjects=_subjects,
    at_most_once=True,
    by_route=_lane_of,
    # Everything but the body says where and how the job goes, and names its outcome.
    repair=RepairRules(
        _check, kept=("id", "method", "path", "limit", "bucket", "route", "op_type")
    ),
)
