"""The admin API's list routes: a page asked for in the query string, and its answer.

Dead letters and late failures page alike: ``limit`` (1..`MAX_PAGE`, 100 by default) and
``after`` (the ``next_after`` of the page before) beside the filter's own parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs

from service.errors import FieldError, InvalidRequest
from service.store.dead_letter_admin import check_ids
from service.web.http import Request, Response, json_response

MAX_PAGE = 1000


class Listed(Protocol):
    """A record a list route shows."""

    def as_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class PageQuery:
    """The page a list route's query asks for, and the rest of the query: its filter."""

    limit: int
    after: str | None
    filter_fields: dict[str, str]

    @classmethod
    def parse(cls, request: Request) -> PageQuery:
        """The query's page; 400 naming ``limit`` or ``after`` when either is malformed."""
        query = {k: v[-1] for k, v in parse_qs(request.query, keep_blank_values=True).items()}
        limit_text = query.pop("limit", "100")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
            raise InvalidRequest(
                [FieldError("limit", "range", f"limit must be 1..{MAX_PAGE}", MAX_PAGE)]
            )
        after = query.pop("after", None) or None
        if after is not None:
            check_ids((after,))
        return cls(int(limit_text), after, query)


def page_response(name: str, records: Sequence[Listed], next_after: str | None) -> Response:
    """A page of records under `name`, with the ``after`` that asks for the next one."""
    return json_response(200, {name: [r.as_dict() for r in records], "next_after": next_after})
