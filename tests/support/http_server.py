"""Serve any ASGI app over real HTTP from a background thread, for the length of a test."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

__all__ = ["serve_in_thread"]

_POLL_INTERVAL_S = 0.005


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def serve_in_thread(
    app: ASGIApp, *, startup_timeout_s: float = 10.0, shutdown_timeout_s: float = 10.0
) -> Iterator[str]:
    """Run `app` under uvicorn on 127.0.0.1 (a free port) and yield its base URL.

    Returns once the server accepts connections; on exit, stops it and waits for the thread.
    Requests still running at exit get one second to finish and are then cancelled.
    """
    # Binding here, before uvicorn starts, means no other process can take the port between
    # choosing it and listening on it.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,  # leave the test process's logging (and pytest's capture) alone
        log_level="warning",
        access_log=False,
        ws="none",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn:{port}", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not (server.started and _accepts_connections(port)):
            if not thread.is_alive():
                raise RuntimeError(f"the server on port {port} exited during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the server on port {port} did not start in {startup_timeout_s}s"
                )
            thread.join(_POLL_INTERVAL_S)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(shutdown_timeout_s)
        if thread.is_alive():
            server.force_exit = True
            thread.join(shutdown_timeout_s)
        sock.close()
        if thread.is_alive():
            raise RuntimeError(f"the server on port {port} did not stop in {shutdown_timeout_s}s")
