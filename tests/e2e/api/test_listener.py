"""The ingest listener's limits, probed with raw sockets against a real `cioq api` process.

Each probe is what a bad or hostile client does: declare a huge body, trickle a body or
the headers, send too many or too large headers. Each must be answered (or cut off) at
once or after its deadline, never by holding the connection open.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import Proc, RedisServer, cioq_proc, free_port, wait_http

KEY = "listener-ingest-key"
MAX_BODY = 2_000
HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
MAX_HEADERS = 20
MAX_HEADER_BYTES = 2_048
#: How long an answer "at once" may take on a loaded 2-core machine.
PROMPT_S = 3.0
TRACK = b"POST /api/v1/customers/p1/events HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + (
    KEY.encode()
)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp: Path = tmp_path_factory.mktemp("listener")
    redis_server = RedisServer(tmp / "redis")
    port = free_port()
    env = {
        **os.environ,
        "CIOQ_REDIS_URL": redis_server.url,
        "CIOQ_INGEST_KEYS": KEY,
        "CIOQ_MAX_REQUEST_BYTES": str(MAX_BODY),
        "CIOQ_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "CIOQ_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "CIOQ_MAX_HEADER_COUNT": str(MAX_HEADERS),
        "CIOQ_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
        "PORT": str(port),
    }
    proc: Proc = cioq_proc("api", ["api"], env, tmp)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield port
    finally:
        proc.stop()
        redis_server.stop()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def _answer(sock: socket.socket) -> tuple[int, bytes, bool]:
    """The status, the raw response, and whether the server then closed the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    sock.settimeout(2)
    try:
        while chunk := sock.recv(65536):
            data += chunk
        closed = True
    except TimeoutError:
        closed = False
    return status, data, closed


def _event(length: int) -> bytes:
    body = b'{"name":"e"}'
    return body + b" " * (length - len(body))


def test_declared_body_over_the_cap_is_refused_at_once(api: int) -> None:
    """413 before a single body byte is sent, and the connection is closed."""
    with _connect(api) as sock:
        started = time.monotonic()
        sock.sendall(TRACK + b"\r\nContent-Length: 1000000000\r\n\r\n")
        status, raw, closed = _answer(sock)
    assert status == 413, raw
    assert b'"rule":"max_bytes"' in raw
    assert closed
    assert time.monotonic() - started < PROMPT_S


def test_slow_body_is_cut_off_after_its_deadline(api: int) -> None:
    """A body trickled slower than CIOQ_BODY_TIMEOUT_S gets 408, and no longer holds the socket."""
    with _connect(api) as sock:
        sock.sendall(TRACK + b"\r\nContent-Length: 100\r\n\r\n" + b'{"name":')
        started = time.monotonic()
        status, raw, closed = _answer(sock)
        waited_s = time.monotonic() - started
    assert status == 408, raw
    assert b'"rule":"timeout"' in raw
    assert closed
    assert BODY_TIMEOUT_S * 0.9 <= waited_s < BODY_TIMEOUT_S + PROMPT_S


def test_slow_headers_are_cut_off_after_their_deadline(api: int) -> None:
    with _connect(api) as sock:
        sock.sendall(TRACK + b"\r\nX-Slow: 1")
        started = time.monotonic()
        status, raw, closed = _answer(sock)
        waited_s = time.monotonic() - started
    assert status == 408, raw
    assert closed
    assert HEADER_TIMEOUT_S * 0.9 <= waited_s < HEADER_TIMEOUT_S + PROMPT_S


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(b"".join(b"\r\nX-H%d: v" % i for i in range(MAX_HEADERS)), id="count"),
        pytest.param(b"\r\nX-Big: " + b"v" * MAX_HEADER_BYTES, id="bytes"),
    ],
)
def test_header_limits(api: int, extra: bytes) -> None:
    """Over the header count or size: 431 and close, without waiting for the head to end."""
    with _connect(api) as sock:
        started = time.monotonic()
        sock.sendall(TRACK + extra)  # the head is never finished
        status, raw, closed = _answer(sock)
    assert status == 431, raw
    assert closed
    assert time.monotonic() - started < PROMPT_S


def test_requests_within_the_limits_pass_on_one_connection(api: int) -> None:
    """Right at every limit, two requests on one kept-alive connection are both accepted."""
    headers = b"".join(b"\r\nX-H%d: v" % i for i in range(MAX_HEADERS - 4))
    body = _event(MAX_BODY)
    request = TRACK + headers + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    with _connect(api) as sock:
        for _ in range(2):
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            assert data.startswith(b"HTTP/1.1 200"), data
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(rest) < length:
                rest += sock.recv(65536)


# The JSON API is answered without ASGI (service/api/direct.py): what uvicorn's own cycle
# did for it must still hold, request by request and on one connection.


def _responses(sock: socket.socket, count: int) -> list[tuple[int, bytes, bytes]]:
    """`count` responses read off one connection: (status, head, body) each."""
    data = b""
    found: list[tuple[int, bytes, bytes]] = []
    while len(found) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(found)} responses"
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(data) < length:
            data += sock.recv(65536)
        found.append((int(head.split(b" ", 2)[1]), head, data[:length]))
        data = data[length:]
    return found


def _post(body: bytes, extra: bytes = b"") -> bytes:
    return TRACK + extra + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def test_pipelined_requests_are_answered_in_order_across_both_paths(api: int) -> None:
    """JSON API requests (direct) and /metrics (ASGI) sent back to back on one connection:
    each answered, in the order sent."""
    metrics = b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n"
    health = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    bad = _post(b'{"data":1}')  # no name: 400
    with _connect(api) as sock:
        sock.sendall(_post(b'{"name":"a"}') + metrics + bad + health + _post(b'{"name":"b"}'))
        answers = _responses(sock, 5)
    assert [status for status, _, _ in answers] == [200, 200, 400, 200, 200]
    assert b"cioq_ingest_requests_total" in answers[1][2]
    assert b'"field":"name"' in answers[2][2]
    assert b'"status":"ok"' in answers[3][2]


def test_expect_100_continue_gets_continue_before_the_body(api: int) -> None:
    """curl sends ``Expect: 100-continue`` for bodies over 1 KB and waits for it."""
    body = _event(1_500)
    with _connect(api) as sock:
        sock.sendall(TRACK + b"\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        sock.sendall(body)
        [(status, _, _)] = _responses(sock, 1)
    assert status == 200


def test_chunked_body_over_the_cap_is_refused_and_closed(api: int) -> None:
    """No Content-Length to refuse at once: the cap is counted as the chunks arrive."""
    chunk = b"x" * 1_000
    with _connect(api) as sock:
        sock.sendall(TRACK + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):  # 3,000 bytes, over MAX_BODY
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, raw, closed = _answer(sock)
    assert status == 413, raw
    assert b'"rule":"max_bytes"' in raw
    assert closed


def test_http_1_0_and_connection_close_end_the_connection(api: int) -> None:
    for request in (
        _post(b'{"name":"a"}').replace(b"HTTP/1.1", b"HTTP/1.0"),
        _post(b'{"name":"a"}', b"\r\nConnection: close"),
    ):
        with _connect(api) as sock:
            sock.sendall(request)
            status, raw, closed = _answer(sock)
        assert status == 200, raw
        assert closed
        assert b"connection: close" in raw.lower()


def test_a_client_gone_mid_body_leaves_the_api_serving(api: int) -> None:
    with _connect(api) as sock:
        sock.sendall(TRACK + b"\r\nContent-Length: 100\r\n\r\n" + b'{"name":')
    with _connect(api) as sock:
        sock.sendall(_post(b'{"name":"after"}'))
        [(status, _, body)] = _responses(sock, 1)
    assert status == 200, body
