"""`Wire` sends past httpx.Client's per-request layers: the request must be the one the
client would build, its failures httpx's own, and an egress proxy must still apply."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from service.delivery.outcomes import Transport
from service.delivery.upstream import USER_AGENT, Wire, exchange, transport_failure

BASES = [
    "https://track.customer.io",
    "https://api-eu.customer.io/",
    "http://127.0.0.1:8080/prefix",
    "http://sandbox:9000/deep/prefix/",
]
#: Unreserved, reserved and non-ASCII characters, as person ids and queries carry them.
_SEGMENT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/?#"), max_size=12)


def _wire(base: str, transport: httpx.BaseTransport | None = None) -> Wire:
    headers = {"Authorization": "Bearer k", "Content-Type": "application/json"}
    return Wire(
        base,
        {**headers, "User-Agent": USER_AGENT},
        timeout_s=7.5,
        transport=transport or httpx.MockTransport(lambda _: httpx.Response(200)),
        limits=httpx.Limits(keepalive_expiry=2.0),
    )


def _same(ours: httpx.Request, theirs: httpx.Request) -> None:
    assert ours.method == theirs.method
    assert ours.url == theirs.url
    assert ours.url.raw_path == theirs.url.raw_path
    assert ours.headers.multi_items() == theirs.headers.multi_items()
    assert ours.read() == theirs.read()
    assert ours.extensions == theirs.extensions


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize(
    "path",
    [
        "/api/v2/batch",
        "/v1/send/email",
        "/v1/campaigns/12/triggers",
        "/v1/customers/a%20b/messages?id_type=email&start_ts=1700000000",
        "/api/v1/customers/j%C3%B6rg/events",
    ],
)
def test_the_request_is_the_one_the_client_builds(base: str, path: str) -> None:
    wire = _wire(base)
    body = b'{"a": 1}'
    _same(wire.build("POST", path, body), wire.client.build_request("POST", path, content=body))


@given(segments=st.lists(_SEGMENT, min_size=1, max_size=4), query=st.none() | _SEGMENT)
def test_any_path_and_query_build_alike(segments: list[str], query: str | None) -> None:
    path = "/" + "/".join(segments) + ("" if query is None else f"?{query}")
    assume(not path.startswith("//"))  # not sent past the client: its URL is another host
    for base in BASES:
        wire = _wire(base)
        try:
            theirs = wire.client.build_request("PUT", path, content=b"")
        except httpx.InvalidURL:  # a control character: refused alike
            with pytest.raises(httpx.InvalidURL):
                wire.build("PUT", path, b"")
            continue
        _same(wire.build("PUT", path, b""), theirs)


def test_a_request_goes_to_the_transport_and_is_read_whole() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, content=b'{"ok":true}', headers={"retry-after": "3"})

    wire = _wire("http://sandbox:9000", httpx.MockTransport(answer))
    got = exchange(wire, "POST", "/v1/send/email", b"{}")
    assert (got.status, got.body, got.retry_after_s) == (201, b'{"ok":true}', 3.0)
    assert [str(r.url) for r in seen] == ["http://sandbox:9000/v1/send/email"]
    assert seen[0].headers["authorization"] == "Bearer k"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx.ConnectError("refused"), Transport.CONNECT_REFUSED),
        (httpx.ConnectTimeout("slow"), Transport.CONNECT_TIMEOUT),
        (httpx.ReadTimeout("slow"), Transport.READ_TIMEOUT),
        (httpx.WriteError("broken"), Transport.WRITE_ERROR),
        (httpx.ReadError("reset"), Transport.RESET),
    ],
)
def test_a_transport_failure_is_the_one_httpx_raised(
    error: httpx.HTTPError, expected: Transport
) -> None:
    def fail(_: httpx.Request) -> httpx.Response:
        raise error

    got = exchange(_wire("http://sandbox:9000", httpx.MockTransport(fail)), "POST", "/v1/x", b"")
    assert got.status is None
    assert got.transport is expected == transport_failure(error)


def test_a_body_cut_off_mid_read_fails_and_closes_the_answer() -> None:
    closed: list[bool] = []

    class CutOff(httpx.SyncByteStream):
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield b'{"par'
            raise httpx.ReadError("connection reset")

        def close(self) -> None:
            closed.append(True)

    wire = _wire(
        "http://sandbox:9000", httpx.MockTransport(lambda _: httpx.Response(200, stream=CutOff()))
    )
    got = exchange(wire, "POST", "/v1/send/email", b"{}")
    assert (got.status, got.transport) == (None, Transport.RESET)
    assert closed == [True]


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "http_proxy", "ALL_PROXY"])
def test_an_egress_proxy_from_the_environment_sends_through_the_client(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    for name in (
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "ALL_PROXY",
        "https_proxy",
        "http_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    assert _wire("https://track.customer.io").transport is not None
    monkeypatch.setenv(variable, "http://egress.internal:3128")
    assert _wire("https://track.customer.io").transport is None
