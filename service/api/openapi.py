"""The OpenAPI 3.1 document of the API, built from the Router's route table.

Paths, methods, path parameters and security come from the `Route` objects themselves,
so a route cannot exist without appearing here. What a table cannot know (summaries,
body schemas, the success answer) is looked up by route name in `OPERATIONS`; a route
missing from it is still documented, with a generic body and answer, rather than left out.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from service.jobs import Lane
from service.lanes.app import schema as app_schema
from service.lanes.pipelines import schema as pipelines_schema
from service.lanes.track import schema as track_schema
from service.web.describe import INT, OBJECT, STR, Operation, Schema, obj, ref
from service.web.http import Route
from service.web.idempotency import MAX_KEY_CHARS

JSON = "application/json"


SCHEMAS: dict[str, Schema] = {
    "FieldError": obj(
        ("field", "rule", "message"),
        field=STR,
        rule=STR,
        message=STR,
        limit={"type": ["integer", "string"]},
        actual={"type": ["integer", "string"]},
    ),
    "Error": {
        **obj(
            ("errors",),
            errors={"type": "array", "items": ref("FieldError")},
            meta=obj(error=STR),
        ),
        "description": "Every 4xx/5xx body; each error names a field and the rule it broke",
    },
    "Accepted": {
        "type": "object",
        "maxProperties": 0,
        "description": "{} once every job of the request is stored",
    },
    **track_schema.SCHEMAS,
}

_ERRORS: dict[int, str] = {
    202: "stored; Customer.io's answer did not come in time (or Prefer: respond-async): "
    "its outcome will be at status_url",
    400: "the request breaks a documented rule; nothing was queued",
    401: "no valid key for this route",
    403: "the workspace has no credentials for this lane (Pipelines: CIOQ_CDP_API_KEY, "
    "App API: CIOQ_APP_API_KEY), or Customer.io refused the message",
    404: "no such resource",
    413: "the body is over CIOQ_MAX_REQUEST_BYTES",
    415: "Content-Encoding other than gzip",
    409: "App sends among the letters and no may_deliver_twice, or the letter is gone",
    422: "the Idempotency-Key was already used for a different request (ingest), or a "
    "dead-letter repair still breaks a rule of its lane (admin; the fields are named)",
    429: "the workspace's App API budget is spent for now (or Customer.io's); Retry-After",
    502: "Customer.io could not be reached or broke the connection",
    504: "Customer.io did not answer in time",
    503: "the queue is unavailable or full; nothing was queued, retry after Retry-After",
}


_DLQ_SELECTION = obj(
    ids={"type": "array", "items": STR},
    all={"type": "boolean"},
    dry_run={"type": "boolean"},
    lane={"enum": [str(lane) for lane in Lane]},
    reason=STR,
    op_type=STR,
    person=STR,
    since=STR,
    until=STR,
    **{"class": STR},
)
_DLQ_OUTCOME = obj(("matched", "dry_run"), matched=INT, dry_run={"type": "boolean"})

OPERATIONS: dict[str, Operation] = {
    "healthz": Operation("The process is up", answer=obj(status=STR), errors=(413,)),
    "readyz": Operation(
        "The process serves requests (Redis is not consulted: ingest answers 503 itself)",
        answer=obj(status=STR),
        errors=(413,),
    ),
    "openapi": Operation("This document", answer=OBJECT, errors=(413,)),
    **track_schema.OPERATIONS,
    "admin.workspaces": Operation("Workspaces and their dead-letter counts", answer=OBJECT),
    "admin.dlq_list": Operation(
        "A page of dead letters",
        answer=obj(("dead_letters",), dead_letters={"type": "array", "items": OBJECT}),
        query=(("limit", STR), ("after", STR)),
        errors=(400, 401, 404, 413, 503),
    ),
    "admin.dlq_summary": Operation(
        "Dead letters by reason", answer=OBJECT, errors=(400, 401, 404, 413, 503)
    ),
    "admin.dlq_show": Operation("One dead letter", answer=OBJECT, errors=(400, 401, 404, 413, 503)),
    "admin.dlq_replay": Operation(
        "Queue dead letters again",
        _DLQ_SELECTION,
        True,
        answer=_DLQ_OUTCOME,
        errors=(400, 401, 404, 413, 503),
    ),
    "admin.dlq_purge": Operation(
        "Delete dead letters",
        _DLQ_SELECTION,
        True,
        answer=_DLQ_OUTCOME,
        errors=(400, 401, 404, 413, 503),
    ),
    "admin.dlq_repair": Operation(
        "Repair a dead letter's payload and replay it (checked as a new call; 422 names the "
        "broken rules)",
        obj(("payload",), payload=OBJECT, may_deliver_twice={"type": "boolean"}),
        True,
        answer=obj(("id", "replayed", "changes"), id=STR, replayed={"type": "boolean"}),
        errors=(400, 401, 404, 409, 413, 422, 503),
    ),
    "admin.dlq_bulk_repair": Operation(
        "Drop or rename one field on every selected letter that has it, and replay them",
        obj(
            ("action", "field"),
            action={"enum": ["drop", "rename"]},
            field=STR,
            to=STR,
            may_deliver_twice={"type": "boolean"},
            **_DLQ_SELECTION["properties"],
        ),
        True,
        answer=obj(("matched", "fixable", "repaired", "dry_run"), matched=INT, fixable=INT),
        errors=(400, 401, 404, 409, 413, 503),
    ),
    "admin.forget": Operation(
        "Forget a person (by id, email or cio_id; give every identifier known): remove their "
        "pending jobs, dead letters, App outcomes and stored answers, then tombstone them",
        obj(
            ("person",),
            person={"oneOf": [STR, {"type": "array", "items": STR}]},
            all_shards={"type": "boolean"},
            delete_upstream={"type": "boolean"},
        ),
        True,
        answer=obj(
            ("person", "removed", "tombstone_ttl_s"),
            person=STR,
            removed=OBJECT,
            mentions_kept=INT,
            tombstone_ttl_s=INT,
            took_ms=INT,
            upstream_deletes=INT,
        ),
        errors=(400, 401, 404, 413, 503),
    ),
}
OPERATIONS.update(
    (name, Operation(summary, body, True, errors=(400, 401, 403, 413, 415, 503)))
    for name, summary, body in pipelines_schema.OPERATIONS
)
#: App API writes answer Customer.io's own 2xx/4xx (``{"meta":{"error"}}``) or cioq's 202.
_CIO_ERRORS = tuple((status, app_schema.CUSTOMERIO_ERROR) for status in (400, 403, 404, 413))
OPERATIONS.update(
    (
        name,
        Operation(
            summary,
            body,
            True,
            answer=answer,
            errors=(401, 415, 503),
            also=((202, app_schema.JOB), *_CIO_ERRORS),
        ),
    )
    for name, summary, body, answer in app_schema.SENDS
)
OPERATIONS.update(
    {
        "admin.late_list": Operation(
            "A page of late failures (calls Customer.io accepted, then failed), newest first",
            answer=obj(("late_failures",), late_failures={"type": "array", "items": OBJECT}),
            query=(("limit", STR), ("after", STR)),
            errors=(400, 401, 404, 413, 503),
        ),
        "admin.late_show": Operation(
            "One late failure", answer=OBJECT, errors=(400, 401, 404, 413, 503)
        ),
        "admin.late_resend": Operation(
            "Send a linked late failure's (corrected) call again, once (checked as a new call)",
            obj((), payload=OBJECT),
            True,
            answer=obj(("id", "job_id", "resent", "changes"), id=STR, job_id=STR),
            errors=(400, 401, 404, 409, 413, 422, 503),
        ),
    }
)
OPERATIONS["app.job"] = Operation(
    "An App API job's outcome (Customer.io's status and body, attempts), by its job id",
    answer=app_schema.JOB,
    errors=(400, 401, 404, 413, 503),
)
OPERATIONS.update(
    (name, Operation(summary, answer=OBJECT, errors=(400, 401, 403, 404, 413, 429, 502, 504)))
    for name, summary in app_schema.READ_OPERATIONS
)

_SECURITY_SCHEMES: dict[str, Schema] = {
    "ingestBasic": {
        "type": "http",
        "scheme": "basic",
        "description": "user: any (the Track SDKs send the site id), password: an ingest "
        "key; or user: an ingest key with a blank password (the Pipelines SDKs)",
    },
    "ingestBearer": {"type": "http", "scheme": "bearer", "description": "an ingest key"},
    "adminBasic": {"type": "http", "scheme": "basic", "description": "password: an admin key"},
    "adminBearer": {"type": "http", "scheme": "bearer", "description": "an admin key"},
}
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "ingest": [{"ingestBasic": []}, {"ingestBearer": []}],
    "admin": [{"adminBasic": []}, {"adminBearer": []}],
    "public": [],
}
_IDEMPOTENCY_KEY: Schema = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "a repeat within the window gets the first answer; nothing is queued",
    "schema": {"type": "string", "pattern": "^[!-~]+$", "maxLength": MAX_KEY_CHARS},
}


def path_of(route: Route) -> str:
    return "/" + "/".join(route.pattern)


def _generic(route: Route) -> Operation:
    body = None if route.method in ("GET", "DELETE") else OBJECT
    return Operation(route.name, body, answer=OBJECT, errors=(400, 401, 404, 413, 503))


def _responses(op: Operation, writes: bool) -> dict[str, Any]:
    success: dict[str, Any] = {"description": op.summary}
    if op.status != 204:
        success["content"] = {JSON: {"schema": op.answer or ref("Accepted")}}
    if writes:
        success["headers"] = {
            "Idempotent-Replayed": {
                "description": "true when this is the stored answer to an earlier request",
                "schema": {"enum": ["true"]},
            }
        }
    out: dict[str, Any] = {str(op.status): success}
    for status in (*op.errors, *((422,) if writes else ())):
        error: dict[str, Any] = {
            "description": _ERRORS[status],
            "content": {JSON: {"schema": ref("Error")}},
        }
        out[str(status)] = error
    for status, schema in op.also:
        out[str(status)] = {"description": _ERRORS[status], "content": {JSON: {"schema": schema}}}
    if "503" in out:
        out["503"]["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    return out


def _operation(route: Route) -> dict[str, Any]:
    op = OPERATIONS.get(route.name) or _generic(route)
    writes = route.auth == "ingest" and op.body is not None
    parameters: list[Schema] = [
        {
            "name": p[1:-1],
            "in": "path",
            "required": True,
            "schema": {"type": "string", "minLength": 1},
        }
        for p in route.pattern
        if p.startswith("{")
    ]
    parameters.extend(
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in op.query
    )
    if writes:
        parameters.append(_IDEMPOTENCY_KEY)
    out: dict[str, Any] = {
        "operationId": route.name,
        "summary": op.summary,
        "security": _SECURITY[route.auth],
        "responses": _responses(op, writes),
    }
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required, "content": {JSON: {"schema": op.body}}}
    return out


def _version() -> str:
    try:
        return version("cioq")
    except PackageNotFoundError:
        return "0"


#: `GET /metrics` is answered ahead of the router (`IngestApp.__call__`), so it is
#: described here rather than derived from a route.
METRICS_PATH: dict[str, Any] = {
    "get": {
        "operationId": "metrics",
        "summary": "Prometheus metrics in the text exposition format (no key needed)",
        "security": [],
        "responses": {
            "200": {
                "description": "counts and gauges; labels never carry a person",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    }
}


def document(routes: list[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document describing exactly `routes`, and `/metrics`."""
    paths: dict[str, dict[str, Any]] = {"/metrics": METRICS_PATH}
    for route in routes:
        paths.setdefault(path_of(route), {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cioq",
            "version": _version(),
            "description": "A durable queue in front of Customer.io's Track and Pipelines "
            "APIs: same paths, bodies and auth; 2xx means stored, delivery follows.",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": _SECURITY_SCHEMES},
    }
