"""The HTTP layer: a ThreadingHTTPServer that hands each request to a handler and moves
the :class:`Response` it returns onto the wire (delayed, cut or dropped as it says).

It knows nothing of the simulator: it is given ``answer`` and the ``stopping`` event.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from do_exporter.simulator.responses import Response

# (method, target, headers, body) -> the answer
Answer = Callable[[str, str, Mapping[str, str], bytes], Response]


class SimulatorServer(ThreadingHTTPServer):
    """Serves ``answer``; tracks open connections so a stop can close them.

    While ``stopping`` is set, requests are not answered and delays end at once.
    """

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], answer: Answer, stopping: threading.Event) -> None:
        self.answer = answer
        self.stopping = stopping
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_all(self) -> None:
        """Shut down every open client connection (kept-alive ones included)."""
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 60
    server: SimulatorServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def version_string(self) -> str:
        return "cloudflare"

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the simulator reports through its stats, not stderr."""

    def _serve(self) -> None:
        server = self.server
        if server.stopping.is_set():
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = {key: value for key, value in self.headers.items()}
        response = server.answer(self.command, self.path, headers, body)
        if response.delay > 0 and server.stopping.wait(response.delay):
            self.close_connection = True
            return
        if response.action == "disconnect":
            self.close_connection = True
            return
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if response.action == "drop":
            self.wfile.write(response.body[: len(response.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve
