"""The HTTP endpoint Prometheus scrapes: ``/metrics``, ``/healthz``, ``/readyz`` and ``/``.

A scrape only reads: the snapshot's exposition is already rendered, and the exporter's own
request metrics are a few dozen series. It never waits for a poll.

How connections are served, so that hostile clients cannot keep Prometheus out:

- One thread (``http-server``) owns every connection that is *waiting for a request head*:
  it accepts, does the TLS handshake and reads heads without blocking, over a selector.
  A head is bounded (:mod:`do_exporter.httphead`: 16 KiB, 64 header lines, an 8 KiB request
  line) and must arrive whole within ``head_timeout`` (10 s) of its first byte (of the
  connection, for a new one); a keep-alive connection may wait ``idle_timeout`` (15 s) for
  its next request's first byte. At most ``max_waiting`` (512) connections wait at once:
  when a new one comes, the one waiting longest is closed. So stalled clients cost a few
  kilobytes each and no thread, and they cannot keep a new connection from being read.
- Only a complete head gets a thread (from a pool of at most ``max_answering``, 256): it
  checks basic auth, composes and writes the answer, bounded as a whole by
  ``answer_timeout`` (15 s), then hands a keep-alive connection back to the selector. When
  all are busy, the answer running longest (over ``shed_after``, 1 s: a client that does not
  read) is cut to make room (:mod:`do_exporter.answerpool`); only when all are younger does
  a request get 503.
- Basic auth work is bounded (:mod:`do_exporter.authguard`): remembered passwords cost
  nothing, one bcrypt check at a time, failed checks rate limited per address and overall;
  a request over those limits gets 429 after ``TARPIT`` (1 s), from the selector thread.
- A refused head (400, 414, 431, 505) or a head that ran out of time (408) is answered at
  once from the selector thread, then the connection is closed after draining what the
  client still sends for at most 2 s, so the client can read the answer.
"""

from __future__ import annotations

import contextlib
import html
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus

import structlog

from . import __version__
from .answerpool import AnswerPool
from .authguard import AuthGuard, AuthLimits, Verdict
from .clock import SYSTEM, Clock
from .httphead import MAX_HEAD, Refusal, Request, parse_head
from .httpwire import LANDING, SERVER, TEXT, Streamed, plain_answer, send_all, send_streamed
from .webconfig import WebConfig

log = structlog.get_logger("do_exporter.server")

# The classic text format; generate_latest writes it whatever the library's newest one is.
CONTENT_TYPE_PLAIN_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"
ALLOWED = frozenset({"GET", "HEAD"})
KNOWN = frozenset({"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})
LINGER = 2.0  # seconds a refused connection is drained before it is closed
TARPIT = 1.0  # seconds before a client over the authentication limits gets its 429

# What /metrics serves: the body, whole or in parts that are sent back to back (one gzip member,
# or the pre-rendered snapshot and the own metrics), so a large body is never copied to join;
# or Streamed, its pieces made while it is sent (the plain text, inflated from the segments).
Body = bytes | Streamed | Iterable[bytes]


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may cost the server (the defaults are what the daemon uses)."""

    head_timeout: float = 10.0  # seconds for a whole request head, from its first byte
    idle_timeout: float = 15.0  # seconds a keep-alive connection may wait for a request
    answer_timeout: float = 15.0  # seconds for the client to read a whole answer
    max_waiting: int = 512  # connections waiting for a head; the oldest is closed beyond
    max_answering: int = 256  # answers written at once (threads)
    worker_idle: float = 60.0  # seconds an idle answer thread is kept
    shed_after: float = 1.0  # all threads busy: an answer this old gives way to a new one
    auth: AuthLimits = field(default_factory=AuthLimits)  # failed password checks


class _Conn:
    """A client connection and what the selector thread knows of its current head."""

    __slots__ = (
        "address", "buffer", "deadline", "delayed", "handshaking", "idle", "lingering", "sock",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, address: str, *, handshaking: bool) -> None:
        self.sock = sock
        self.address = address
        self.buffer = b""  # the head so far (and what followed it, if pipelined)
        self.handshaking = handshaking
        self.lingering = False  # refused: drained until closed
        self.idle = False  # keep-alive, waiting for the first byte of the next request
        self.delayed = b""  # an answer sent (then the connection closed) at the deadline
        self.deadline = 0.0


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
        limits: Limits = Limits(),
        clock: Clock = SYSTEM,
    ) -> None:
        web = web or WebConfig()
        self._metrics, self._ready, self._tls, self._clock = metrics, ready, web.tls, clock
        self.auth = AuthGuard(web.auth, limits=limits.auth, clock=clock) if web.auth else None
        self.limits = limits
        self.scheme = "https" if web.tls else "http"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=512)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        # Connections waiting for a head, oldest first (only the selector thread touches it).
        self._waiting: dict[int, _Conn] = {}
        self._returned: deque[_Conn] = deque()  # keep-alive connections from answer threads
        self._stopping = False
        self._evicted = 0
        self._evicted_logged = 0.0
        self._accept_failed_logged = 0.0
        self._limited, self._limited_logged = 0, float("-inf")
        self._workers = AnswerPool(
            limits.max_answering, limits.worker_idle, self._answer,
            shed_after=limits.shed_after, clock=clock,
        )  # fmt: skip
        self._thread = threading.Thread(target=self._loop, name="http-server", daemon=True)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join(5)
        self._workers.stop()
        for conn in list(self._waiting.values()):
            self._close(conn)
        while self._returned:
            self._returned.popleft().sock.close()
        self._selector.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- the selector thread ---------------------------------------------------------------

    def _loop(self) -> None:
        next_expiry = 0.0
        while not self._stopping:
            for key, _ in self._selector.select(timeout=0.25):
                try:
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                        while self._returned:
                            self._resume(self._returned.popleft())
                    elif isinstance(key.data, _Conn):
                        self._ready_to_read(key.data)
                except Exception:  # a bug here must not take the endpoint down with it
                    log.exception("HTTP server error")
                    if isinstance(key.data, _Conn):
                        self._close(key.data)
            now = self._clock.monotonic()
            if now >= next_expiry:
                self._expire(now)
                next_expiry = now + 0.1

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, address = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # out of file descriptors (or buffers): shed the oldest
                now = self._clock.monotonic()
                if now - self._accept_failed_logged > 10:
                    log.warning("cannot accept a connection", error=str(exc))
                    self._accept_failed_logged = now
                if self._waiting:
                    self._evict()
                else:  # every descriptor is in an answer: let those finish, do not spin
                    time.sleep(0.01)
                return
            if len(self._waiting) >= self.limits.max_waiting:
                self._evict()
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            conn = _Conn(sock, str(address[0]), handshaking=self._tls is not None)
            conn.deadline = self._clock.monotonic() + self.limits.head_timeout
            self._waiting[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _evict(self) -> None:
        oldest = next(iter(self._waiting.values()))
        self._close(oldest)
        self._evicted += 1
        now = self._clock.monotonic()
        if now - self._evicted_logged > 10:
            log.warning(
                "too many connections waiting for a request; closed the oldest",
                closed=self._evicted,
                limit=self.limits.max_waiting,
            )
            self._evicted_logged, self._evicted = now, 0

    def _resume(self, conn: _Conn) -> None:
        """A keep-alive connection back from its answer: wait for the next request."""
        if self._stopping:
            conn.sock.close()
            return
        try:
            conn.sock.setblocking(False)
            self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        except (OSError, ValueError):
            conn.sock.close()
            return
        # Bytes already here (pipelined) are a head begun: it has head_timeout, not idle.
        conn.idle = not conn.buffer
        wait = self.limits.idle_timeout if conn.idle else self.limits.head_timeout
        conn.deadline = self._clock.monotonic() + wait
        self._waiting[conn.sock.fileno()] = conn
        pending = isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending()
        if conn.buffer or pending:  # pipelined: the next head may already be here
            self._ready_to_read(conn)

    def _ready_to_read(self, conn: _Conn) -> None:
        sock = conn.sock
        try:
            if conn.handshaking:
                assert isinstance(sock, ssl.SSLSocket)
                sock.do_handshake()
                conn.handshaking = False
                self._selector.modify(sock, selectors.EVENT_READ, conn)
            closed = self._receive(conn)
        except ssl.SSLWantReadError:
            self._selector.modify(sock, selectors.EVENT_READ, conn)
            return
        except ssl.SSLWantWriteError:
            self._selector.modify(sock, selectors.EVENT_WRITE, conn)
            return
        except (OSError, ValueError):  # ssl.SSLError is an OSError
            self._close(conn)
            return
        if closed:
            self._close(conn)
        elif conn.lingering:
            conn.buffer = b""
        elif conn.buffer:
            self._parse(conn)

    def _receive(self, conn: _Conn) -> bool:
        """Read what is there (up to one byte past the head limit); ``True`` at end of stream."""
        sock = conn.sock
        while True:
            room = (1 << 16) if conn.lingering else MAX_HEAD + 1 - len(conn.buffer)
            if room <= 0:
                return False
            try:
                chunk = sock.recv(room)
            except (BlockingIOError, ssl.SSLWantReadError):
                return False
            if not chunk:
                return True
            if conn.idle:  # the next request has begun: its head has head_timeout from now
                conn.idle = False
                conn.deadline = self._clock.monotonic() + self.limits.head_timeout
            conn.buffer = b"" if conn.lingering else conn.buffer + chunk
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                return False

    def _parse(self, conn: _Conn) -> None:
        parsed = parse_head(conn.buffer)
        if parsed is None:
            return
        if isinstance(parsed, Refusal):
            self._refuse(conn, parsed.status, parsed.reason)
            return
        if self.auth is not None:
            verdict = self.auth.precheck(parsed.headers.get("authorization"), conn.address)
            if verdict is Verdict.LIMITED:  # answered later, without a thread (module doc)
                self._note_limited(conn.address)
                conn.lingering, conn.buffer = True, b""
                conn.delayed = self._too_many()
                conn.deadline = self._clock.monotonic() + TARPIT
                return
        conn.buffer = conn.buffer[parsed.size :]
        del self._waiting[conn.sock.fileno()]
        self._selector.unregister(conn.sock)
        if not self._workers.submit(conn, parsed):
            log.warning("too many answers in flight; refusing a request", client=conn.address)
            self._waiting[conn.sock.fileno()] = conn
            self._selector.register(conn.sock, selectors.EVENT_READ, conn)
            self._refuse(conn, HTTPStatus.SERVICE_UNAVAILABLE, "too many requests at once")

    def _refuse(self, conn: _Conn, status: HTTPStatus, reason: str) -> None:
        """Answer at once (best effort, without blocking), then drain and close."""
        log.debug("request refused", client=conn.address, status=status.value, reason=reason)
        with contextlib.suppress(OSError):
            conn.sock.send(plain_answer(status, reason))
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_WR)
        conn.lingering, conn.buffer = True, b""
        conn.deadline = self._clock.monotonic() + LINGER

    def _note_limited(self, address: str) -> None:
        """Log requests over the authentication limits, at most one line each 10 s."""
        self._limited += 1
        now = self._clock.monotonic()
        if now - self._limited_logged > 10:
            log.warning(
                "too many failed password checks; answering 429 without checking",
                refused=self._limited,
                client=address,
            )
            self._limited_logged, self._limited = now, 0

    def _too_many(self) -> bytes:
        assert self.auth is not None
        retry = f"Retry-After: {self.auth.retry_after()}\r\n"
        return plain_answer(HTTPStatus.TOO_MANY_REQUESTS, "too many failed logins", retry)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._waiting.values() if c.deadline <= now]:
            if conn.delayed:
                with contextlib.suppress(OSError):
                    conn.sock.send(conn.delayed)
                    conn.sock.shutdown(socket.SHUT_WR)
                conn.delayed = b""
                conn.deadline = now + LINGER
            elif conn.buffer and not conn.lingering:
                self._refuse(conn, HTTPStatus.REQUEST_TIMEOUT, "the request head took too long")
            else:
                self._close(conn)

    def _close(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd >= 0:
            self._waiting.pop(fd, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn.sock)
        conn.sock.close()

    # -- answer threads --------------------------------------------------------------------

    def _answer(self, conn: _Conn, request: Request) -> None:
        keep = False
        try:
            conn.sock.settimeout(self.limits.answer_timeout)
            keep = self._respond(conn, request)
        except Exception:  # a client that hangs up or times out is not our error
            log.debug("connection error", client=conn.address, exc_info=True)
            keep = False
        if keep and not self._stopping:
            self._returned.append(conn)
            self._wake()
        else:
            with contextlib.suppress(OSError):
                conn.sock.close()

    def _respond(self, conn: _Conn, request: Request) -> bool:
        """Answer one request; ``True`` if the connection stays open for another."""
        send_body = request.method != "HEAD"
        keep = request.keep_alive
        if request.method not in ALLOWED:
            known = request.method in KNOWN
            status = HTTPStatus.METHOD_NOT_ALLOWED if known else HTTPStatus.NOT_IMPLEMENTED
            extra = (("Allow", "GET, HEAD"),) if known else ()
            self._send(conn, request, status, TEXT, b"", True, extra=extra, close=True)
            return False
        path = request.target.split("?", 1)[0]
        if self.auth is not None:
            verdict = self.auth.check(request.headers.get("authorization"), conn.address)
            if verdict is not Verdict.ALLOWED:
                self._deny(conn, request, limited=verdict is Verdict.LIMITED, keep=keep)
                return keep
        if path == "/metrics":
            gzipped = "gzip" in request.header("accept-encoding").lower()
            body = self._metrics(gzipped)
            self._send(
                conn,
                request,
                HTTPStatus.OK,
                CONTENT_TYPE_PLAIN_0_0_4,
                body,
                send_body,
                encoding="gzip" if gzipped else None,
                close=not keep,
            )
        elif path == "/healthz":
            self._send(conn, request, HTTPStatus.OK, TEXT, b"ok\n", send_body, close=not keep)
        elif path == "/readyz":
            if self._ready():
                status, text = HTTPStatus.OK, b"ready\n"
            else:
                status = HTTPStatus.SERVICE_UNAVAILABLE
                text = b"not ready: no poll has read any account's namespaces yet\n"
            self._send(conn, request, status, TEXT, text, send_body, close=not keep)
        elif path == "/":
            page = LANDING.format(version=html.escape(__version__)).encode()
            ctype = "text/html; charset=utf-8"
            self._send(conn, request, HTTPStatus.OK, ctype, page, send_body, close=not keep)
        else:
            self._send(
                conn, request, HTTPStatus.NOT_FOUND, TEXT, b"not found\n", send_body,
                close=not keep,
            )  # fmt: skip
        return keep

    def _deny(self, conn: _Conn, request: Request, *, limited: bool, keep: bool) -> None:
        """401 for a failed password check, 429 for one refused by the limits."""
        assert self.auth is not None
        if limited:
            status, text = HTTPStatus.TOO_MANY_REQUESTS, b"too many failed logins\n"
            extra = ("Retry-After", str(self.auth.retry_after()))
        else:
            status, text = HTTPStatus.UNAUTHORIZED, b"unauthorized\n"
            extra = ("WWW-Authenticate", 'Basic realm="do-exporter"')
        send_body = request.method != "HEAD"
        self._send(conn, request, status, TEXT, text, send_body, extra=(extra,), close=not keep)

    def _send(
        self,
        conn: _Conn,
        request: Request,
        status: HTTPStatus,
        content_type: str,
        body: Body,
        send_body: bool,
        *,
        encoding: str | None = None,
        extra: tuple[tuple[str, str], ...] = (),
        close: bool = False,
    ) -> None:
        parts: list[bytes] = [body] if isinstance(body, bytes) else []
        if not isinstance(body, bytes | Streamed):
            parts = list(body)
        length = body.length if isinstance(body, Streamed) else sum(len(p) for p in parts)
        log.debug(
            "http request",
            client=conn.address,
            method=request.method,
            path=request.target[:200],
            status=status.value,
        )
        head = b""  # HTTP/0.9 answers are the body alone
        if request.version != "HTTP/0.9":
            lines = [
                f"HTTP/1.1 {status.value} {status.phrase}",
                f"Server: {SERVER}",
                f"Date: {formatdate(usegmt=True)}",
                f"Content-Type: {content_type}",
                f"Content-Length: {length}",
                *(f"{name}: {value}" for name, value in extra),
            ]
            if encoding:
                lines.append(f"Content-Encoding: {encoding}")
            if content_type == CONTENT_TYPE_PLAIN_0_0_4:
                lines.append("Vary: Accept-Encoding")
            if close:
                lines.append("Connection: close")
            elif request.version == "HTTP/1.0":
                lines.append("Connection: keep-alive")
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        timeout = self.limits.answer_timeout
        if send_body and isinstance(body, Streamed):
            send_streamed(conn.sock, head, body, timeout, self._clock)
            return
        send_all(conn.sock, [head, *parts] if send_body else [head], timeout, self._clock)
