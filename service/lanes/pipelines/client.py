"""The Pipelines lane's client: ``/v1/batch`` bodies of calls."""

from __future__ import annotations

from service.config import Workspace
from service.delivery.outcomes import Outcome
from service.delivery.upstream import Upstream, basic_auth_header


class PipelinesClient(Upstream):
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
