"""The console's fix forms (a dead letter's repair, a late failure's re-send): the
operator's JSON, applied, or the same form again with every broken rule named."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.responses import Response

from service.errors import FieldError, InvalidRequest
from service.store.dead_letter_repair import INVALID_FIX_STATUS

#: A fix that breaks a rule, or a record changed meanwhile (409): the operator's to mend on
#: the form. Any other error is the page's.
SHOWN_ON_FORM = (INVALID_FIX_STATUS, 409)


async def apply_fix(
    text: str,
    apply: Callable[[Any], Awaitable[Response]],
    again: Callable[[list[FieldError], int], Response],
) -> Response:
    """`apply` the payload the operator typed as `text`; `again`, the form with the errors
    and status, when the text is not JSON (400) or the fix was refused (`SHOWN_ON_FORM`)."""
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError:
        return again([FieldError("payload", "json", "the payload is not valid JSON")], 400)
    try:
        return await apply(payload)
    except InvalidRequest as exc:
        if exc.status not in SHOWN_ON_FORM:
            raise
        return again(exc.errors, exc.status)
