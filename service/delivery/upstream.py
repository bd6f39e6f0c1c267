"""The one place cioq talks HTTP to Customer.io; each lane's client builds on it.

No httpx or aiohttp exception leaves this module. `Upstream` (the Track and Pipelines clients'
base) sends prepared bodies for one workspace over a kept-alive connection and turns
every answer, and every transport failure, into an `Outcome`. `exchange`/`aexchange`
(the App lane's clients) return Customer.io's answer as it came, or the exact
`Transport` failure, since the App lane's at-most-once policy (`service.lanes.app.policy`)
must tell "never left" from "may have been acted on". One boundary keeps timeouts,
error mapping and connection handling identical across lanes, which differ only in
host, auth header and paths (`service/lanes/<lane>/client.py`).
"""

from __future__ import annotations

import base64
import socket
import time
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import httpx
import orjson

from service.config import Workspace
from service.delivery.outcomes import Outcome, Transport, classify, parse_retry_after

USER_AGENT = "cioq/0.1 (+https://github.com/cioq)"
JSON = "application/json"


class LaneClient(Protocol):
    """The upstream call a lane's drain makes: a batch body (or one job) for one workspace."""

    def send_batch(self, body: bytes, *, op_count: int) -> Outcome: ...

    def close(self) -> None: ...


def basic_auth_header(site_id: str, api_key: str) -> str:
    token = base64.b64encode(f"{site_id}:{api_key}".encode()).decode("ascii")
    return f"Basic {token}"


def timeout(timeout_s: float) -> httpx.Timeout:
    """A request's timeout; connecting gives up sooner."""
    return httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))


#: httpx's own default pool.
_DEFAULT_POOL = httpx.Limits(max_connections=100, max_keepalive_connections=20)


class Wire:
    """A kept-alive connection to one Customer.io API that never follows redirects.

    A request goes straight to the client's transport, past `httpx.Client`'s per-request
    layers (URL merge, cookie jar, auth and redirect flows, event hooks): none of them has
    anything to do here, and they were a third of a send's HTTP CPU (525 against 350 µs
    per POST to the bench sandbox, httpx 0.28, medians of 4 x 1,500). With an egress
    proxy from the environment (``HTTPS_PROXY`` and the like), whose mounts only the
    client applies, every request goes through the client. Either way the request is the
    one the client would build (tests/unit/delivery/test_wire.py) and fails with the same
    httpx exceptions.
    """

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        *,
        timeout_s: float,
        transport: httpx.BaseTransport | None,
        limits: httpx.Limits,
    ) -> None:
        transport = transport or httpx.HTTPTransport(limits=limits)
        self.client = httpx.Client(
            base_url=base_url,
            timeout=timeout(timeout_s),
            transport=transport,
            headers=headers,
            follow_redirects=False,
            limits=limits,  # for the proxy mounts the client builds itself
        )
        proxied = any(scheme != "no" for scheme in urllib.request.getproxies())
        self.transport = None if proxied else transport
        self._prefix = str(self.client.base_url).rstrip("/")
        self._timeout = self.client.timeout.as_dict()

    def build(self, method: str, path: str, body: bytes) -> httpx.Request:
        """The request `httpx.Client.build_request` would make for `path` (one "/" first)."""
        return httpx.Request(
            method,
            self._prefix + path,
            headers=self.client.headers,
            content=body,
            extensions={"timeout": self._timeout},
        )

    def request(self, method: str, path: str, body: bytes) -> httpx.Response:
        """Send `body` to `path`, the answer read whole; raises httpx's exceptions."""
        if self.transport is None or path[:1] != "/" or path[1:2] == "/":
            return self.client.request(method, path, content=body)
        request = self.build(method, path, body)
        response = self.transport.handle_request(request)
        response.request = request
        try:
            response.read()
        except BaseException:
            response.close()
            raise
        return response

    def close(self) -> None:
        self.client.close()


class Upstream(ABC):
    """One workspace's kept-alive connection to one Customer.io API; never raises."""

    #: Whether a 200/207 body may name refused items by ``batch_index`` (Track v2 only).
    item_errors = True
    #: The connection pool (httpx's default unless a lane says otherwise).
    limits = _DEFAULT_POOL

    def __init__(
        self,
        workspace: Workspace,
        *,
        timeout_s: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.workspace = workspace
        base_url, headers = self._endpoint(workspace)
        self.base_url = base_url
        self._http = Wire(
            base_url,
            {**headers, "Content-Type": JSON, "User-Agent": USER_AGENT},
            timeout_s=timeout_s,
            transport=transport,
            limits=self.limits,
        )

    @staticmethod
    @abstractmethod
    def _endpoint(workspace: Workspace) -> tuple[str, dict[str, str]]:
        """The lane's base URL and auth headers for `workspace`."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(workspace={self.workspace.name!r}, base_url={self.base_url!r})"
        )

    def _send(self, method: str, url: str, content: bytes, *, op_count: int) -> Outcome:
        try:
            response = self._http.request(method, url, content)
        except httpx.TimeoutException:
            return classify(None, transport_error="timeout")
        except httpx.TransportError:
            return classify(None, transport_error="connection")
        except httpx.HTTPError:
            return classify(None, transport_error="protocol")
        return classify(
            response.status_code,
            response.content,
            op_count=op_count if self.item_errors else 0,
            retry_after=response.headers.get("retry-after"),
        )

    def close(self) -> None:
        self._http.close()


@dataclass(frozen=True, slots=True)
class Answer:
    """Customer.io's answer to one request, as it came, or how the request failed."""

    status: int | None
    body: bytes = b""
    retry_after_s: float | None = None
    transport: Transport | None = None
    detail: str = ""
    elapsed_s: float = 0.0
    content_type: str = JSON


@dataclass(frozen=True, slots=True)
class KeptAnswer:
    """An answer kept with a send's in-flight note for the drain that settles it, and the
    wall-clock time its request started (the ambiguous-send lookup searches from there)."""

    answer: Answer
    sent_at_s: float


def encode_answer(answer: Answer, *, sent_at_s: float) -> bytes:
    return orjson.dumps(
        {
            "sent_at_s": sent_at_s,
            "status": answer.status,
            "body": base64.b64encode(answer.body).decode("ascii"),
            "retry_after_s": answer.retry_after_s,
            "transport": answer.transport,
            "detail": answer.detail,
            "elapsed_s": answer.elapsed_s,
            "content_type": answer.content_type,
        }
    )


def decode_answer(raw: bytes) -> KeptAnswer:
    data = orjson.loads(raw)
    transport = data["transport"]
    answer = Answer(
        data["status"],
        base64.b64decode(data["body"]),
        data["retry_after_s"],
        None if transport is None else Transport(transport),
        data["detail"],
        data["elapsed_s"],
        data["content_type"],
    )
    return KeptAnswer(answer, float(data["sent_at_s"]))


def transport_failure(exc: httpx.HTTPError) -> Transport:
    """Which `Transport` failure an httpx exception is; the at-most-once line runs here."""
    if isinstance(exc, httpx.ConnectTimeout):
        return Transport.CONNECT_TIMEOUT
    if isinstance(exc, httpx.PoolTimeout):
        return Transport.POOL_TIMEOUT
    if isinstance(exc, httpx.ConnectError):
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, socket.gaierror):
                return Transport.DNS
            cause = cause.__cause__ or cause.__context__
        return Transport.CONNECT_REFUSED
    if isinstance(exc, httpx.ReadTimeout):
        return Transport.READ_TIMEOUT
    if isinstance(exc, httpx.WriteTimeout | httpx.WriteError):
        return Transport.WRITE_ERROR
    if isinstance(exc, httpx.ReadError):
        return Transport.RESET
    return Transport.PROTOCOL


def _answer(response: httpx.Response, started_s: float) -> Answer:
    return Answer(
        response.status_code,
        response.content,
        parse_retry_after(response.headers.get("retry-after")),
        elapsed_s=time.perf_counter() - started_s,
        content_type=response.headers.get("content-type", JSON),
    )


def _failure(transport: Transport, exc: BaseException, started_s: float) -> Answer:
    return Answer(
        None,
        transport=transport,
        detail=f"{type(exc).__name__}: {exc}",
        elapsed_s=time.perf_counter() - started_s,
    )


def exchange(http: Wire, method: str, url: str, body: bytes) -> Answer:
    """One request, one answer; never retried, never raises."""
    started_s = time.perf_counter()
    try:
        response = http.request(method, url, body)
    except httpx.HTTPError as exc:
        return _failure(transport_failure(exc), exc, started_s)
    return _answer(response, started_s)


async def aexchange(
    http: httpx.AsyncClient, method: str, url: str, body: bytes, headers: dict[str, str]
) -> Answer:
    """`exchange` for the asyncio ingest API."""
    started_s = time.perf_counter()
    try:
        response = await http.request(method, url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return _failure(transport_failure(exc), exc, started_s)
    return _answer(response, started_s)


class AsyncWire:
    """`Wire` for the asyncio api (its own App sends, `service.lanes.app.inline`), on aiohttp:
    210 µs of CPU per POST to the bench sandbox against 568 for httpx's asyncio transport
    and 445 for its sync client (one at a time, 2,000 each). Same timeouts, trust roots
    (httpx's), proxy variables and no redirects. The proxy is read from the environment
    once: aiohttp's ``trust_env`` reads it and ``~/.netrc`` in a thread on every request
    (a sixth of the api's CPU under the App bench's load). aiohttp never resends a POST on a
    kept-alive connection the server closed (it retries only idempotent methods), and
    `exchange` maps its failures to the same `Transport` line as `transport_failure`."""

    def __init__(
        self, base_url: str, headers: dict[str, str], *, timeout_s: float, keepalive_s: float
    ) -> None:
        self._prefix = base_url.rstrip("/")
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=min(timeout_s, 10.0), sock_read=timeout_s
        )
        self._keepalive_s = keepalive_s
        scheme, host = urllib.parse.urlsplit(self._prefix)[:2]
        bypass = urllib.request.proxy_bypass(host.rsplit(":", 1)[0]) if host else True
        self._proxy = None if bypass else urllib.request.getproxies().get(scheme)
        #: Opened in the running loop on first use (a session belongs to one loop).
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            ssl=httpx.create_ssl_context(), keepalive_timeout=self._keepalive_s
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=self._timeout,
            auto_decompress=False,
        )
        return self._session

    async def exchange(self, method: str, path: str, body: bytes) -> Answer:
        """One request, one answer; never retried, never raises."""
        session = self._session or self._open()
        started_s = time.perf_counter()
        try:
            async with session.request(
                method, self._prefix + path, data=body, allow_redirects=False, proxy=self._proxy
            ) as response:
                content = await response.read()
                headers = response.headers
                return Answer(
                    response.status,
                    content,
                    parse_retry_after(headers.get("retry-after")),
                    elapsed_s=time.perf_counter() - started_s,
                    content_type=headers.get("content-type", JSON),
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _failure(async_transport_failure(exc), exc, started_s)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def async_transport_failure(exc: BaseException) -> Transport:
    """`transport_failure` for aiohttp: what never left is told from what may have acted."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return Transport.DNS
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return Transport.CONNECT_TIMEOUT  # the pool's wait or the connect: nothing was written
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Transport.CONNECT_REFUSED
    if isinstance(exc, TimeoutError):  # SocketTimeoutError (the read) or any other
        return Transport.READ_TIMEOUT
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return Transport.RESET
    return Transport.PROTOCOL
