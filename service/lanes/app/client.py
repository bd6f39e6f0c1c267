"""The App lane's HTTP clients: `AppClient` (sends and triggers, for the drain) and
`AppProxy` (reads, for the ingest API). Both return Customer.io's `Answer` as it came;
`service.delivery.upstream` is where the request goes out."""

from __future__ import annotations

import httpx

from service.config import Workspace
from service.delivery.upstream import USER_AGENT, Answer, Upstream, aexchange, exchange, timeout

#: Idle kept-alive connections are dropped well before a server's usual 5 s keep-alive
#: timeout: a send written into a connection the server is closing is ambiguous.
KEEPALIVE_S = 2.0


def bearer(workspace: Workspace) -> dict[str, str]:
    if workspace.app_api_key is None:
        raise ValueError(f"workspace {workspace.name!r} has no App API key")
    return {"Authorization": f"Bearer {workspace.app_api_key.get_secret_value()}"}


class AppClient(Upstream):
    """Sends App API requests (transactional sends, broadcast triggers) for one workspace.

    Never raises for upstream trouble and never retries by itself: one call, one request.
    """

    limits = httpx.Limits(keepalive_expiry=KEEPALIVE_S)

    @staticmethod
    def _endpoint(workspace: Workspace) -> tuple[str, dict[str, str]]:
        return workspace.app_base_url, bearer(workspace)

    def send(self, method: str, path: str, body: bytes) -> Answer:
        return exchange(self._http, method, path, body)


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
            timeout=timeout(timeout_s),
            transport=transport,
            headers={**bearer(workspace), "User-Agent": USER_AGENT},
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S),
            follow_redirects=False,
        )

    async def forward(self, method: str, url: str, body: bytes, content_type: str | None) -> Answer:
        headers = {"Content-Type": content_type} if content_type else {}
        return await aexchange(self._http, method, url, body, headers)

    async def aclose(self) -> None:
        await self._http.aclose()
