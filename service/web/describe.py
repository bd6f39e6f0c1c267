"""Building blocks for describing routes in the OpenAPI document.

`service.api.openapi` assembles the document; each lane describes its own routes with
these (`service.lanes.track.schema`), so a new lane's description lives in its folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Schema = dict[str, Any]

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
OBJECT: Schema = {"type": "object"}
SECONDS: Schema = {"type": "integer", "description": "Unix time in seconds"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: tuple[str, ...] = (), /, **properties: Schema) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


@dataclass(frozen=True, slots=True)
class Operation:
    """What the route table cannot say about one route."""

    summary: str
    body: Schema | None = None
    body_required: bool = False
    status: int = 200
    answer: Schema | None = None
    query: tuple[tuple[str, Schema], ...] = ()
    errors: tuple[int, ...] = (400, 401, 413, 503)
    #: Other answers with a body of their own shape, e.g. readyz's 503.
    also: tuple[tuple[int, Schema], ...] = ()
