"""The HTTP endpoint Prometheus scrapes: ``/metrics``, ``/healthz``, ``/readyz`` and ``/``.

A scrape only reads: the snapshot's exposition is already rendered, and the exporter's own
request metrics are a few dozen series. It never waits for a poll.
"""

from __future__ import annotations

import html
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

from . import __version__
from .webconfig import BasicAuth, WebConfig

log = structlog.get_logger("do_exporter.server")

IDLE_TIMEOUT = 15.0  # seconds a client may keep a connection idle or send slowly
# The classic text format; generate_latest writes it whatever the library's newest one is.
CONTENT_TYPE_PLAIN_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"
MAX_CONNECTIONS = 256  # connections served at once; more are closed at once, unanswered

# What /metrics serves: the body, whole or in parts that are sent back to back (gzip members,
# or the pre-rendered snapshot and the own metrics), so a large body is never copied to join.
Body = bytes | Sequence[bytes]


def _send_all(sock: socket.socket, buffers: list[bytes]) -> None:
    """Write ``buffers`` back to back, with as few system calls (and GIL hand-offs) as possible.

    A plain socket takes them in gathering ``sendmsg`` calls (headers and body leave
    together, and the scrape thread need not win the GIL back between them); a TLS socket,
    which has no ``sendmsg``, takes them one ``send`` at a time. The socket's timeout bounds
    the whole answer, not each call, so a client that reads slowly cannot hold a connection
    slot for longer than that.
    """
    timeout = sock.gettimeout()
    deadline = None if timeout is None else time.monotonic() + timeout
    tls = isinstance(sock, ssl.SSLSocket)
    views = [memoryview(b) for b in buffers if b]
    try:
        while views:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the client did not read the answer in time")
                sock.settimeout(left)
            sent = sock.send(views[0]) if tls else sock.sendmsg(views)
            while sent and views:
                first = len(views[0])
                if sent >= first:
                    sent -= first
                    views.pop(0)
                else:
                    views[0] = views[0][sent:]
                    sent = 0
    finally:
        sock.settimeout(timeout)


class _Server(ThreadingHTTPServer):
    """One thread per connection, at most :data:`MAX_CONNECTIONS` of them; optional TLS.

    The TLS handshake happens in the connection's own thread (not in ``accept``), so a
    client that stalls its handshake holds only its own thread, and only until the timeout.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128
    tls: ssl.SSLContext | None = None

    def server_bind(self) -> None:
        super().server_bind()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("too many connections; refusing one", client=client_address[0])
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up, times out or fails its TLS handshake is not our error.
        log.debug("connection error", client=client_address[0], exc_info=True)


class MetricsServer:
    """Serves the endpoints on a background thread until :meth:`stop`."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        metrics: Callable[[bool], Body],
        ready: Callable[[], bool],
        web: WebConfig | None = None,
    ) -> None:
        web = web or WebConfig()
        handler = _handler_class(metrics, ready, web.auth)
        server_class: type[_Server] = _Server
        if ":" in host:
            server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
        self._httpd = server_class((host, port), handler)
        self._httpd.tls = web.tls
        self.scheme = "https" if web.tls else "http"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="http-server", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


_LANDING = """<!doctype html>
<html><head><meta charset="utf-8"><title>do-exporter</title></head>
<body>
<h1>do-exporter {version}</h1>
<p>Prometheus exporter for Cloudflare Durable Objects.</p>
<ul>
<li><a href="/metrics">/metrics</a>: the metrics</li>
<li><a href="/healthz">/healthz</a>: the process is alive</li>
<li><a href="/readyz">/readyz</a>: a poll has read the namespaces of an account</li>
</ul>
</body></html>
"""


def _handler_class(
    metrics: Callable[[bool], Body], ready: Callable[[], bool], auth: BasicAuth | None
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"do-exporter/{__version__}"
        sys_version = ""
        protocol_version = "HTTP/1.1"
        timeout = IDLE_TIMEOUT
        # Headers and body leave in one write (_send_all) except over TLS and in the
        # stdlib's own answers (405, 414, 501): without TCP_NODELAY a small body written
        # after its headers waits for the client's delayed ACK of them (~40 ms on Linux).
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            self._respond(send_body=True)

        def do_HEAD(self) -> None:
            self._respond(send_body=False)

        def _respond(self, *, send_body: bool) -> None:
            path = self.path.split("?", 1)[0]
            if auth is not None and not auth.check(self.headers.get("Authorization")):
                self._send(
                    HTTPStatus.UNAUTHORIZED,
                    "text/plain; charset=utf-8",
                    b"unauthorized\n",
                    send_body,
                    extra=(("WWW-Authenticate", 'Basic realm="do-exporter"'),),
                )
                return
            if path == "/metrics":
                gzipped = "gzip" in self.headers.get("Accept-Encoding", "").lower()
                self._send(
                    HTTPStatus.OK,
                    CONTENT_TYPE_PLAIN_0_0_4,
                    metrics(gzipped),
                    send_body,
                    encoding="gzip" if gzipped else None,
                )
            elif path == "/healthz":
                self._send(HTTPStatus.OK, "text/plain; charset=utf-8", b"ok\n", send_body)
            elif path == "/readyz":
                if ready():
                    self._send(HTTPStatus.OK, "text/plain; charset=utf-8", b"ready\n", send_body)
                else:
                    self._send(
                        HTTPStatus.SERVICE_UNAVAILABLE,
                        "text/plain; charset=utf-8",
                        b"not ready: no poll has read any account's namespaces yet\n",
                        send_body,
                    )
            elif path == "/":
                page = _LANDING.format(version=html.escape(__version__)).encode()
                self._send(HTTPStatus.OK, "text/html; charset=utf-8", page, send_body)
            else:
                self._send(
                    HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n", send_body
                )

        def _send(
            self,
            status: HTTPStatus,
            content_type: str,
            body: Body,
            send_body: bool,
            *,
            encoding: str | None = None,
            extra: tuple[tuple[str, str], ...] = (),
        ) -> None:
            parts = [body] if isinstance(body, bytes) else list(body)
            self.log_request(status.value)
            head = b""  # HTTP/0.9 answers are the body alone
            if self.request_version != "HTTP/0.9":
                lines = [
                    f"{self.protocol_version} {status.value} {status.phrase}",
                    f"Server: {self.version_string()}",
                    f"Date: {self.date_time_string()}",
                    f"Content-Type: {content_type}",
                    f"Content-Length: {sum(len(part) for part in parts)}",
                    *(f"{name}: {value}" for name, value in extra),
                ]
                if encoding:
                    lines.append(f"Content-Encoding: {encoding}")
                if content_type == CONTENT_TYPE_PLAIN_0_0_4:
                    lines.append("Vary: Accept-Encoding")
                head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            _send_all(self.connection, [head, *parts] if send_body else [head])

        def _not_allowed(self) -> None:
            self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
            self.send_header("Allow", "GET, HEAD")
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http request", client=self.client_address[0], message=format % args)

    return Handler
