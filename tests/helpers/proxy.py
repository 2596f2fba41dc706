"""A TCP relay to a test server (Redis, PostgreSQL) that can hang or go away, for failure tests."""

from __future__ import annotations

import contextlib
import socket
import threading


class Proxy:
    """A TCP relay on 127.0.0.1 to a test server that can stop answering or go away, like a failing server."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        self.frozen = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            self.sockets += [down, up]
            threading.Thread(target=self._pump, args=(down, up), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self.frozen.is_set():  # frozen: swallow everything, answer nothing
                    dst.sendall(data)
        except OSError:
            pass

    def freeze(self) -> None:
        """Keep every connection open but stop relaying: a server that hangs."""
        self.frozen.set()

    def close(self) -> None:
        """Close the port and every connection: a server that went away."""
        for s in self.sockets:
            # shutdown() first: close() alone does not wake a thread blocked in accept() or recv().
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
