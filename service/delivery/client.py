"""The one place cioq talks HTTP to Customer.io, for every lane.

`TrackClient` (Track API) and `PipelinesClient` (Pipelines API) send prepared bodies for
one workspace over a kept-alive connection; both go through `_Upstream._send`, which
turns every answer, and every transport failure, into an `Outcome`. No httpx exception
leaves this module. One module rather than one per lane: the lanes differ only in host,
auth header and paths, and one transport boundary keeps timeouts, error mapping and
connection handling identical.
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from typing import Any

import httpx
import orjson

from service.config import Workspace
from service.delivery.outcomes import Outcome, classify

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
