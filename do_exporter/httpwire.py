"""Bytes on the wire for the endpoint: whole-answer writes, one-line refusals, the landing page."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http import HTTPStatus

import structlog

from . import __version__
from .clock import SYSTEM, Clock

log = structlog.get_logger("do_exporter.server")

TEXT = "text/plain; charset=utf-8"
SERVER = f"do-exporter/{__version__}"


@dataclass(frozen=True, slots=True)
class Streamed:
    """A body of known length whose pieces are made while it is sent (the plain text
    inflated from the held deflate segments): never joined, never held whole."""

    length: int
    pieces: Iterable[bytes]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.pieces)


class BodyMismatch(ConnectionError):
    """A streamed body did not come to the length announced (a bug of ours, not the
    client's): the connection is closed."""


def send_streamed(
    sock: socket.socket, head: bytes, body: Streamed, timeout: float, clock: Clock = SYSTEM
) -> None:
    """Write ``head`` and ``body`` a piece at a time, all within ``timeout``. Raises
    :class:`BodyMismatch` (the caller closes the connection) if the pieces do not add up
    to ``body.length``: a client must never wait for bytes that will not come."""
    deadline = clock.monotonic() + timeout
    sent, pending = 0, [head]
    for piece in body:
        sent += len(piece)
        if sent > body.length:
            break
        pending.append(piece)
        send_all(sock, pending, deadline - clock.monotonic(), clock)
        pending = []
    if sent != body.length:  # ours, not the client's: logged where a user sees it
        log.error("a /metrics answer did not match its length", sent=sent, length=body.length)
        raise BodyMismatch(f"the body came to {sent} bytes, not the {body.length} announced")
    send_all(sock, pending, deadline - clock.monotonic(), clock)


def send_all(
    sock: socket.socket, buffers: list[bytes], timeout: float, clock: Clock = SYSTEM
) -> None:
    """Write ``buffers`` back to back, with as few system calls (and GIL hand-offs) as possible.

    A plain socket takes them in gathering ``sendmsg`` calls (headers and body leave
    together, and the answering thread need not win the GIL back between them); a TLS
    socket, which has no ``sendmsg``, takes them one ``send`` at a time. ``timeout`` bounds
    the whole answer, not each call, so a client that reads slowly cannot hold a thread for
    longer than that.
    """
    deadline = clock.monotonic() + timeout
    tls = isinstance(sock, ssl.SSLSocket)
    views = [memoryview(b) for b in buffers if b]
    while views:
        left = deadline - clock.monotonic()
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


def plain_answer(status: HTTPStatus, reason: str, extra: str = "") -> bytes:
    """A complete ``Connection: close`` answer with a one-line text body (``extra``: more
    header lines, each ending with CRLF)."""
    body = f"{status.value} {status.phrase}: {reason}\n".encode()
    return (
        f"HTTP/1.1 {status.value} {status.phrase}\r\nServer: {SERVER}\r\n{extra}"
        f"Content-Type: {TEXT}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


LANDING = """<!doctype html>
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
