"""The one place cioq talks HTTP to Customer.io.

`TrackClient` sends prepared bodies for one workspace over a kept-alive connection and
turns every answer, and every transport failure, into an `Outcome`. No httpx exception
leaves this module.
"""

from __future__ import annotations

import base64
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


class TrackClient:
    """Sends Track API requests for one workspace; never raises for upstream trouble."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        timeout_s: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.workspace = workspace
        self._http = httpx.Client(
            base_url=workspace.base_url,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            transport=transport,
            headers={
                "Authorization": basic_auth_header(
                    workspace.site_id, workspace.api_key.get_secret_value()
                ),
                "Content-Type": _JSON,
                "User-Agent": USER_AGENT,
            },
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return (
            f"TrackClient(workspace={self.workspace.name!r}, base_url={self.workspace.base_url!r})"
        )

    def send_batch(self, body: bytes, *, op_count: int) -> Outcome:
        """POST a prepared ``{"batch":[...]}`` body to ``/api/v2/batch``."""
        return self._send("POST", "/api/v2/batch", body, op_count=op_count)

    def send_v1(self, method: str, path: str, query: str, body: Any) -> Outcome:
        """Forward a v1 request that has no v2 equivalent to its own path."""
        url = f"{path}?{query}" if query else path
        content = b"" if body is None else orjson.dumps(body)
        return self._send(method, url, content, op_count=1)

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
            op_count=op_count,
            retry_after=response.headers.get("retry-after"),
        )

    def close(self) -> None:
        self._http.close()
