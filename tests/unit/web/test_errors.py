"""The JSON API's one error table: which response each exception gets, and why that one."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from service.errors import (
    FieldError,
    InvalidRequest,
    Overloaded,
    StoredUnconfirmed,
    StoreUnavailable,
)
from service.web.errors import JSON_ERRORS, ROUTE_SCOPE_KEY, ErrorHandlers
from service.web.http import BodyRefused, Response

SCOPE: dict[str, Any] = {"method": "POST", ROUTE_SCOPE_KEY: "v2.batch"}


def _fields(response: Response) -> list[tuple[str, str]]:
    return [(e["field"], e["rule"]) for e in orjson.loads(response.body)["errors"]]


def test_the_closest_registered_type_along_the_mro_answers() -> None:
    """A subclass with its own handler gets it; one without gets its parent's."""

    class Special(InvalidRequest):
        pass

    class Plain(InvalidRequest):
        pass

    table = ErrorHandlers(
        {InvalidRequest: lambda _, exc: Response(400), Special: lambda _, exc: Response(418)}
    )
    assert table.response(SCOPE, Special()).status == 418
    assert table.response(SCOPE, Plain()).status == 400


def test_an_exception_no_handler_takes_is_raised_again() -> None:
    table = ErrorHandlers({InvalidRequest: lambda _, exc: Response(400)})
    with pytest.raises(KeyError):
        table.response(SCOPE, KeyError("x"))


@pytest.mark.parametrize(
    ("exc", "status", "fields", "headers"),
    [
        (InvalidRequest.of("batch", "type", "not a list"), 400, [("batch", "type")], {}),
        (
            InvalidRequest.of("authorization", "required", "no key", status=401),
            401,
            [("authorization", "required")],
            {},
        ),
        (BodyRefused.too_large(10), 413, [("body", "max_bytes")], {b"connection": b"close"}),
        (BodyRefused.too_slow(2.0), 408, [("body", "timeout")], {b"connection": b"close"}),
        (
            Overloaded(FieldError("backlog", "high_water", "over the mark"), 7),
            503,
            [("backlog", "high_water")],
            {b"retry-after": b"7"},
        ),
        (StoreUnavailable("down"), 503, [("store", "unavailable")], {b"retry-after": b"1"}),
        # An unconfirmed write is store trouble too: the producer retries (idempotently).
        (StoredUnconfirmed("no WAIT"), 503, [("store", "unavailable")], {b"retry-after": b"1"}),
        (RuntimeError("bug"), 500, [("server", "internal")], {}),
    ],
    ids=["invalid", "no-key", "too-large", "too-slow", "overloaded", "store", "unconfirmed", "bug"],
)
def test_json_errors_answer_with_status_and_the_broken_rule(
    exc: Exception, status: int, fields: list[tuple[str, str]], headers: dict[bytes, bytes]
) -> None:
    response = JSON_ERRORS.response(SCOPE, exc)
    assert response.status == status
    assert _fields(response) == fields
    assert headers.items() <= dict(response.headers).items()
