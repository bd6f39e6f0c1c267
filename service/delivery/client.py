"""The one place cioq talks HTTP to Customer.io, for every lane.

`TrackClient` (Track API) and `PipelinesClient` (Pipelines API) send prepared bodies for
one workspace over a kept-alive connection; both go through `_Upstream._send`, which
turns every answer, and every transport failure, into an `Outcome`. `AppClient` (App API
sends and triggers, for the drain) and `AppProxy` (App API reads, for the ingest API)
return Customer.io's answer as it came, or the exact `Transport` failure, since the App
lane's at-most-once policy (`service.lanes.app.policy`) must tell "never left" from
"may have been acted on". No httpx exception leaves this module. One module rather
than one per lane: the lanes differ only in host, auth header and paths, and one
transport boundary keeps timeouts, error mapping and connection handling identical.
"""

from __future__ import annotations

import base64
import socket
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from service.config import Workspace
from service.delivery.outcomes import Outcome, Transport, classify, parse_retry_after

USER_AGENT = "cioq/0.1 (+https://github.com/cioq)"
_JSON = "application/json"


def basic_auth_header(site_id: str, api_key: str) -> str:
    token = base64.b64encode(f"{site_id}:{api_key}".encode()).decode("ascii")
    return f"Basic {token}"


class _Upstream(ABC):
    """One workspace's kept-alive connection to one Customer.io API; never raises."""

    #: Whether a 200/207 body may name refused items by ``batch_index`` (Track v2 only).
    item_errors = True

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
        self._http = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            transport=transport,
            headers={**headers, "Content-Type": _JSON, "User-Agent": USER_AGENT},
            follow_redirects=False,
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
            response = self._http.request(method, url, content=content)
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


class TrackClient(_Upstream):
    """Sends Track API requests for one workspace; never raises for upstream trouble."""

    @staticmethod
    def _endpoint(workspace: Workspace) -> tuple[str, dict[str, str]]:
        auth = basic_auth_header(workspace.site_id, workspace.api_key.get_secret_value())
        return workspace.base_url, {"Authorization": auth}

    def send_batch(self, body: bytes, *, op_count: int) -> Outcome:
        """POST a prepared ``{"batch":[...]}`` body to ``/api/v2/batch``."""
        return self._send("POST", "/api/v2/batch", body, op_count=op_count)

    def send_v1(self, method: str, path: str, query: str, body: Any) -> Outcome:
        """Forward a v1 request that has no v2 equivalent to its own path."""
        url = f"{path}?{query}" if query else path
        content = b"" if body is None else orjson.dumps(body)
        return self._send(method, url, content, op_count=1)


class PipelinesClient(_Upstream):
    """Sends Pipelines ``/v1/batch`` bodies for one workspace, in strict mode.

    ``X-Strict-Mode: 1`` makes Customer.io answer an invalid call with 400 and a bad key
    with 401, instead of its default "200 and silently dropped". Pipelines answers carry
    no per-item errors, so a 200 is always a success.
    """

    item_errors = False

    @staticmethod
    def _endpoint(workspace: Workspace) -> tuple[str, dict[str, str]]:
        if workspace.cdp_api_key is None:
            raise ValueError(f"workspace {workspace.name!r} has no Pipelines write key")
        # The write key is the username and the password is blank (Pipelines OpenAPI).
        auth = basic_auth_header(workspace.cdp_api_key.get_secret_value(), "")
        return workspace.cdp_base_url, {"Authorization": auth, "X-Strict-Mode": "1"}

    def send_batch(self, body: bytes, *, op_count: int) -> Outcome:
        """POST a prepared ``{"batch":[...]}`` body of calls to ``/v1/batch``."""
        return self._send("POST", "/v1/batch", body, op_count=op_count)


@dataclass(frozen=True, slots=True)
class AppAnswer:
    """Customer.io's answer to one App API request, or how the request failed."""

    status: int | None
    body: bytes = b""
    retry_after_s: float | None = None
    transport: Transport | None = None
    detail: str = ""
    elapsed_s: float = 0.0
    content_type: str = "application/json"


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


def _app_headers(workspace: Workspace) -> dict[str, str]:
    if workspace.app_api_key is None:
        raise ValueError(f"workspace {workspace.name!r} has no App API key")
    return {
        "Authorization": f"Bearer {workspace.app_api_key.get_secret_value()}",
        "User-Agent": USER_AGENT,
    }


def _answer(response: httpx.Response, started_s: float) -> AppAnswer:
    return AppAnswer(
        response.status_code,
        response.content,
        parse_retry_after(response.headers.get("retry-after")),
        elapsed_s=time.perf_counter() - started_s,
        content_type=response.headers.get("content-type", _JSON),
    )


def _failure(exc: httpx.HTTPError, started_s: float) -> AppAnswer:
    return AppAnswer(
        None,
        transport=transport_failure(exc),
        detail=f"{type(exc).__name__}: {exc}",
        elapsed_s=time.perf_counter() - started_s,
    )


#: Idle kept-alive connections are dropped well before a server's usual 5 s keep-alive
#: timeout: a send written into a connection the server is closing is ambiguous.
_APP_KEEPALIVE_S = 2.0


def _app_timeout(timeout_s: float) -> httpx.Timeout:
    return httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))


class AppClient:
    """Sends App API requests (transactional sends, broadcast triggers) for one workspace.

    Never raises for upstream trouble and never retries by itself: one call, one request.
    """

    def __init__(
        self,
        workspace: Workspace,
        *,
        timeout_s: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.workspace = workspace
        self._http = httpx.Client(
            base_url=workspace.app_base_url,
            timeout=_app_timeout(timeout_s),
            transport=transport,
            headers={**_app_headers(workspace), "Content-Type": _JSON},
            limits=httpx.Limits(keepalive_expiry=_APP_KEEPALIVE_S),
            follow_redirects=False,
        )

    def send(self, method: str, path: str, body: bytes) -> AppAnswer:
        started_s = time.perf_counter()
        try:
            response = self._http.request(method, path, content=body)
        except httpx.HTTPError as exc:
            return _failure(exc, started_s)
        return _answer(response, started_s)

    def close(self) -> None:
        self._http.close()


class AppProxy:
    """Forwards App API reads for the ingest API (asyncio), one client per workspace."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=workspace.app_base_url,
            timeout=_app_timeout(timeout_s),
            transport=transport,
            headers=_app_headers(workspace),
            limits=httpx.Limits(keepalive_expiry=_APP_KEEPALIVE_S),
            follow_redirects=False,
        )

    async def forward(
        self, method: str, url: str, body: bytes, content_type: str | None
    ) -> AppAnswer:
        started_s = time.perf_counter()
        headers = {"Content-Type": content_type} if content_type else {}
        try:
            response = await self._http.request(method, url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return _failure(exc, started_s)
        return _answer(response, started_s)

    async def aclose(self) -> None:
        await self._http.aclose()
