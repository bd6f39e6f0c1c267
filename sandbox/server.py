"""Run a sandbox Customer.io under uvicorn, as `cioq sandbox` and local stacks do."""

from __future__ import annotations

import uvicorn

from sandbox.app import create_sandbox_app
from sandbox.state import SandboxConfig

__all__ = ["serve"]

#: A sandbox holds no work worth draining; a request parked by a "hang" poison must not
#: keep the process alive for its full hang time after SIGTERM.
_GRACEFUL_SHUTDOWN_S = 1


def serve(
    config: SandboxConfig,
    host: str,
    port: int,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> None:
    """Serve a sandbox on host:port until SIGINT/SIGTERM; HTTPS when given a cert and key."""
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("give both tls_cert and tls_key, or neither")
    uvicorn.run(
        create_sandbox_app(config),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
    )
