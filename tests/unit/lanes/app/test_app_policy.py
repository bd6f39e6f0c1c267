"""The App lane's at-most-once policy, one row per kind of answer, and the client's split of
transport failures into "never left" and "may have been acted on" over real sockets."""

from __future__ import annotations

import socket

import httpx
import pytest

from service.delivery.outcomes import Transport
from service.delivery.upstream import transport_failure
from service.lanes.app.policy import NOT_SENT, Decision, Verdict, decide

T = Transport


@pytest.mark.parametrize(
    ("status", "transport", "retry_after_s", "expected"),
    [
        (200, None, None, Decision(Verdict.DELIVERED)),
        (202, None, None, Decision(Verdict.DELIVERED)),
        (None, T.CONNECT_REFUSED, None, Decision(Verdict.RESEND)),
        (None, T.DNS, None, Decision(Verdict.RESEND)),
        (None, T.CONNECT_TIMEOUT, None, Decision(Verdict.RESEND)),
        (None, T.POOL_TIMEOUT, None, Decision(Verdict.RESEND)),
        (None, T.READ_TIMEOUT, None, Decision(Verdict.AMBIGUOUS)),
        (None, T.RESET, None, Decision(Verdict.AMBIGUOUS)),
        (None, T.WRITE_ERROR, None, Decision(Verdict.AMBIGUOUS)),
        (None, T.PROTOCOL, None, Decision(Verdict.AMBIGUOUS)),
        (429, None, 2.0, Decision(Verdict.THROTTLED, 2.0)),
        (429, None, None, Decision(Verdict.THROTTLED)),
        (503, None, 1.5, Decision(Verdict.RESEND, 1.5)),
        (503, None, None, Decision(Verdict.AMBIGUOUS)),
        (500, None, None, Decision(Verdict.AMBIGUOUS)),
        (502, None, None, Decision(Verdict.AMBIGUOUS)),
        (504, None, None, Decision(Verdict.AMBIGUOUS)),
        (500, None, 3.0, Decision(Verdict.AMBIGUOUS)),
        (401, None, None, Decision(Verdict.SETUP)),
        (400, None, None, Decision(Verdict.REFUSED)),
        (403, None, None, Decision(Verdict.REFUSED)),
        (404, None, None, Decision(Verdict.REFUSED)),
        (413, None, None, Decision(Verdict.REFUSED)),
        (422, None, None, Decision(Verdict.REFUSED)),
        (301, None, None, Decision(Verdict.AMBIGUOUS)),
    ],
)
def test_decide(
    status: int | None, transport: Transport | None, retry_after_s: float | None, expected: Decision
) -> None:
    assert decide(status, transport=transport, retry_after_s=retry_after_s) == expected


@pytest.mark.parametrize(
    ("status", "transport"), [(None, T.READ_TIMEOUT), (None, T.RESET), (500, None), (504, None)]
)
def test_opt_in_resends_ambiguous_marked_may_duplicate(
    status: int | None, transport: Transport | None
) -> None:
    decision = decide(status, transport=transport, resend_ambiguous=True)
    assert decision == Decision(Verdict.RESEND, may_duplicate=True)


def test_opt_in_changes_nothing_that_was_not_ambiguous() -> None:
    for status in (200, 400, 401, 429):
        assert not decide(status, resend_ambiguous=True).may_duplicate
    assert decide(None, transport=T.DNS, resend_ambiguous=True) == Decision(Verdict.RESEND)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_refused_and_dns_failures_are_not_sent() -> None:
    for url in (f"http://127.0.0.1:{_closed_port()}/", "http://no-such-host.invalid/"):
        with pytest.raises(httpx.ConnectError) as caught:
            httpx.post(url, content=b"{}", timeout=2)
        assert transport_failure(caught.value) in NOT_SENT
    with pytest.raises(httpx.ConnectError) as caught:
        httpx.post("http://no-such-host.invalid/", timeout=2)
    assert transport_failure(caught.value) is T.DNS


def test_read_timeout_and_reset_are_ambiguous() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"http://127.0.0.1:{server.getsockname()[1]}/"
        with pytest.raises(httpx.ReadTimeout) as timed_out:
            httpx.post(url, content=b"{}", timeout=httpx.Timeout(2, read=0.2))
        assert transport_failure(timed_out.value) is T.READ_TIMEOUT
    assert transport_failure(httpx.ReadError("reset")) is T.RESET
    assert transport_failure(httpx.RemoteProtocolError("closed")) is T.PROTOCOL
    assert transport_failure(httpx.ConnectTimeout("slow")) is T.CONNECT_TIMEOUT
