"""A TCP proxy in front of an HTTP server that holds requests until released: what a
client writes while it holds never reaches the server (a worker killed with its POST
written only this far never reached Customer.io); once released, it forwards.
"""

from __future__ import annotations

import socket
import threading


class HoldingProxy:
    """Holds every connection (reads, forwards nothing) until `release()`; connections
    opened after that are forwarded to its upstream both ways. `held` is set once a held
    connection carried bytes."""

    def __init__(self) -> None:
        self._upstream: tuple[str, int] | None = None
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.held = threading.Event()
        self._released = False
        self._closing = False
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def release(self, upstream: tuple[str, int]) -> None:
        """Drop what was held (it never arrives) and forward to `upstream` from now on."""
        self._upstream = upstream
        self._released = True
        for sock in self._sockets[1:]:
            sock.close()

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
            if not self._released or self._upstream is None:
                self._sockets.append(client)
                threading.Thread(target=self._hold, args=(client,), daemon=True).start()
                continue
            server = socket.create_connection(self._upstream)
            self._sockets += [client, server]
            threading.Thread(target=_pump, args=(client, server), daemon=True).start()
            threading.Thread(target=_pump, args=(server, client), daemon=True).start()

    def _hold(self, client: socket.socket) -> None:
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.held.set()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    while True:
        try:
            data = source.recv(65536)
            if not data:
                sink.shutdown(socket.SHUT_WR)
                return
            sink.sendall(data)
        except OSError:
            return
