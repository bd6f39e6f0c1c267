"""A TCP server that accepts connections and never answers: a peer that hangs (a
Customer.io a drain waits on, a broker a trigger waits on)."""

from __future__ import annotations

import socket
import threading


class SilentServer:
    """Accepts on 127.0.0.1 and holds each connection (`held`) unread; `close` ends all."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()
