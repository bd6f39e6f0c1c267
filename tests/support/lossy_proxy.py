"""A TCP proxy in front of Redis that loses one reply: the command runs, its answer never
comes back, so the client times out not knowing whether it ran (audit F10's case).

Threads, not processes, so integration tests may use it.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit, urlunsplit


class LossyProxy:
    """Forwards every connection to `upstream_url`'s Redis. After `lose_next_reply()` the
    first reply read on the connection open at that moment is dropped, and that
    connection stays silent; connections opened later pass everything through."""

    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        self.url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
        self._lock = threading.Lock()
        self._connections = 0
        self._silence: int | None = None
        self._closing = False
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def lose_next_reply(self) -> None:
        with self._lock:
            self._silence = self._connections - 1

    def close(self) -> None:
        self._closing = True
        for sock in self._sockets:
            sock.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._upstream)
            with self._lock:
                index = self._connections
                self._connections += 1
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, index), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, index: int | None) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                silent = index is not None and index == self._silence
            if silent:
                continue
            try:
                sink.sendall(data)
            except OSError:
                return
