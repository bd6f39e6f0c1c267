"""Classification of every upstream answer into the class that decides what happens."""

from __future__ import annotations

import pytest

from service.delivery.outcomes import ItemError, OutcomeClass, classify, parse_retry_after

C = OutcomeClass
BODY_207 = (
    b'{"errors":[{"batch_index":1,"reason":"invalid","field":"identifiers",'
    b'"message":"identifiers must have exactly one key"},'
    b'{"batch_index":0,"reason":"required","field":"name","message":"Name is required"}]}'
)


@pytest.mark.parametrize(
    ("status", "body", "transport", "expected"),
    [
        (200, b"{}", None, C.SUCCESS),
        (200, b"", None, C.SUCCESS),
        (204, b"", None, C.SUCCESS),
        (200, BODY_207, None, C.PARTIAL),
        (207, BODY_207, None, C.PARTIAL),
        (207, b'{"errors":[]}', None, C.SUCCESS),
        (207, b'{"errors":[{"reason":"x"}]}', None, C.SUCCESS),
        (207, b"not json", None, C.SUCCESS),
        (
            400,
            b'{"errors":[{"reason":"invalid","field":"batch","message":"bad"}]}',
            None,
            C.INVALID,
        ),
        (413, b"", None, C.INVALID),
        (422, b"", None, C.INVALID),
        (409, b"", None, C.INVALID),
        (401, b"", None, C.SETUP),
        (403, b"", None, C.SETUP),
        (404, b"", None, C.SETUP),
        (301, b"", None, C.SETUP),
        (429, b"", None, C.THROTTLE),
        (408, b"", None, C.TRANSIENT),
        (500, b"", None, C.TRANSIENT),
        (502, b"<html>bad gateway</html>", None, C.TRANSIENT),
        (503, b"", None, C.TRANSIENT),
        (None, b"", "timeout", C.TRANSIENT),
        (None, b"", "connection", C.TRANSIENT),
    ],
)
def test_classify_table(
    status: int | None, body: bytes, transport: str | None, expected: OutcomeClass
) -> None:
    """Each status and body lands in the class DESIGN §5 gives it."""
    assert classify(status, body, op_count=3, transport_error=transport).outcome_class is expected


def test_partial_maps_items_by_index_in_order() -> None:
    """Item errors keep Customer.io's reason/field/message, sorted by batch_index."""
    outcome = classify(207, BODY_207, op_count=3)
    assert outcome.item_errors == (
        ItemError(0, "required", "name", "Name is required"),
        ItemError(1, "invalid", "identifiers", "identifiers must have exactly one key"),
    )


def test_partial_ignores_out_of_range_and_duplicate_indexes() -> None:
    """An index outside the batch, or repeated, cannot fail ops that were not sent."""
    body = (
        b'{"errors":[{"batch_index":5,"reason":"a"},{"batch_index":0,"reason":"b"},'
        b'{"batch_index":0,"reason":"c"},{"batch_index":true,"reason":"d"}]}'
    )
    outcome = classify(207, body, op_count=2)
    assert [e.batch_index for e in outcome.item_errors] == [0]
    assert outcome.item_errors[0].reason == "b"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2", 2.0),
        (" 0.5 ", 0.5),
        ("-3", 0.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
    ],
)
def test_retry_after(header: str | None, expected: float | None) -> None:
    """Retry-After is read as seconds or as an HTTP date relative to now."""
    now_s = 1445412480.0  # 2015-10-21 07:28:00 GMT
    assert parse_retry_after(header, now_s=now_s) == expected


def test_throttle_carries_retry_after() -> None:
    """A 429 with Retry-After tells the pause how long to last."""
    outcome = classify(429, b"", retry_after="2")
    assert outcome.retry_after_s == 2.0
    assert outcome.status_class == "4xx"
    assert classify(None, transport_error="timeout").status_class == "timeout"
