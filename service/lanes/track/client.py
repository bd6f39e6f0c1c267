"""The Track lane's client: v2 batches, and v1 requests forwarded to their own path."""

from __future__ import annotations

from typing import Any

import orjson

from service.config import Workspace
from service.delivery.outcomes import Outcome
from service.delivery.upstream import LaneClient, Upstream, basic_auth_header


class TrackClient(Upstream):
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


def send_unit(client: LaneClient, kind: str, body: bytes, op_count: int) -> Outcome:
    """Send a unit the drain built: a v2 batch body, or one v1 job's stored envelope."""
    if kind == "v1":
        assert isinstance(client, TrackClient)  # v1 jobs live in the Track lane only
        envelope: dict[str, Any] = orjson.loads(body)
        return client.send_v1(
            envelope["method"], envelope["path"], envelope.get("query", ""), envelope["body"]
        )
    return client.send_batch(body, op_count=op_count)
