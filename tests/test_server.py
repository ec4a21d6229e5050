"""The /metrics answer on the wire: headers and a body in parts, over plain TCP and TLS."""

from __future__ import annotations

import contextlib
import gzip
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from structlog.testing import capture_logs

from do_exporter.httpwire import Streamed
from do_exporter.server import CONTENT_TYPE_PLAIN_0_0_4, Limits, MetricsServer
from do_exporter.webconfig import WebConfig
from tests.support import SAFETY_TIMEOUT, FakeClock, wait_until
from tests.test_webconfig import certs  # noqa: F401  (the module-scoped certificate fixture)

# Larger than any socket send buffer, so the gathering write is cut short and must resume
# in the middle of a part; distinct bytes everywhere, so a lost or repeated slice shows.
SNAPSHOT = b"".join(b"series_%07d 1\n" % i for i in range(400_000))  # ~6 MB
OWN = b"# own metrics\nexporter_up 1\n"


def parts(gz: bool) -> tuple[bytes, bytes]:
    if gz:
        return gzip.compress(SNAPSHOT, compresslevel=1), gzip.compress(OWN)
    return SNAPSHOT, OWN


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    srv = MetricsServer("127.0.0.1", 0, metrics=parts, ready=lambda: True)
    srv.start()
    yield srv
    srv.stop()


def read_response(
    stream: socket.socket, head_only: bool = False
) -> tuple[bytes, dict[str, str], bytes]:
    """One HTTP/1.1 response read off a keep-alive connection: status line, headers, body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = stream.recv(65536)
        assert chunk, "connection closed before the headers ended"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = 0 if head_only else int(headers["content-length"])
    body = bytearray(rest)
    while len(body) < length:
        chunk = stream.recv(1 << 20)
        assert chunk, "connection closed mid-body"
        body += chunk
    assert len(body) == length, "more bytes than Content-Length"
    return status.encode(), headers, bytes(body)


def test_parts_arrive_whole_and_in_order_on_one_keep_alive_connection(
    server: MetricsServer,
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=SAFETY_TIMEOUT) as conn:
        for _ in range(2):  # the second answer starts exactly where the first ended
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = read_response(conn)
            assert status == b"HTTP/1.1 200 OK"
            assert headers["content-type"] == CONTENT_TYPE_PLAIN_0_0_4
            assert "content-encoding" not in headers
            assert body == SNAPSHOT + OWN


def test_gzip_parts_are_two_members_of_one_stream(server: MetricsServer) -> None:
    answer = requests.get(
        f"http://127.0.0.1:{server.port}/metrics",
        headers={"Accept-Encoding": "gzip"},
        timeout=SAFETY_TIMEOUT,
    )
    assert answer.headers["Content-Encoding"] == "gzip"
    assert answer.headers["Vary"] == "Accept-Encoding"
    assert answer.content == SNAPSHOT + OWN  # requests decodes both members


def test_head_has_the_get_headers_and_no_body(server: MetricsServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=SAFETY_TIMEOUT) as conn:
        conn.sendall(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        status, head_headers, body = read_response(conn, head_only=True)
        assert status == b"HTTP/1.1 200 OK" and body == b""
        assert int(head_headers["content-length"]) == len(SNAPSHOT + OWN)
        # The same connection still works: HEAD wrote no stray body bytes.
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = read_response(conn)
        assert status == b"HTTP/1.1 200 OK" and body == b"ok\n"
    assert head_headers["server"].startswith("do-exporter/")
    assert head_headers["date"].endswith("GMT")


def test_parts_over_tls(certs: Path) -> None:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certs / "server.crt", certs / "server.key")
    srv = MetricsServer("127.0.0.1", 0, metrics=parts, ready=lambda: True, web=WebConfig(tls=tls))
    srv.start()
    try:
        answer = requests.get(
            f"https://127.0.0.1:{srv.port}/metrics",
            verify=str(certs / "server.crt"),
            timeout=SAFETY_TIMEOUT,
        )
        assert answer.status_code == 200 and answer.content == SNAPSHOT + OWN
    finally:
        srv.stop()


def test_a_slow_reader_is_cut_off_when_the_timeout_runs_out() -> None:
    """The answer timeout bounds the whole answer, not each write: a client that keeps
    reading (so no single write waits long) is cut off once the answer's time, on the
    server's clock (moved by hand here), has run out."""
    clock = FakeClock()
    body = b"x" * (64 << 20)
    srv = MetricsServer(
        "127.0.0.1", 0, metrics=lambda gz: body, ready=lambda: True, clock=clock,
        limits=Limits(answer_timeout=1.0),
    )  # fmt: skip
    srv.start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=SAFETY_TIMEOUT) as conn:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            received = len(conn.recv(1 << 16))  # the answer has begun
            clock.advance(1.0)  # its time is up: the next write is not made
            with contextlib.suppress(ConnectionResetError):
                while chunk := conn.recv(1 << 18):
                    received += len(chunk)
    finally:
        srv.stop()
    assert 0 < received < len(body)


def status_and_close(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send ``request``; read until the server closes: (status line, all bytes). A server
    that never closes fails the test with the client's (safety) timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=SAFETY_TIMEOUT) as conn:
        with contextlib.suppress(OSError):
            conn.sendall(request)
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := conn.recv(65536):
                data += chunk
    return data.split(b"\r\n", 1)[0], data


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n", b"HTTP/1.1 505 HTTP Version Not Supported"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"HTTP/1.1 505 HTTP Version Not Supported"),
        (b"GARBAGE\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (b"GET /metrics HTTP/1.1 extra\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (b"GET /metrics HTTX/1.1\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (b"GET /metrics HTTP/1.1\r\nBad Name: x\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (b"GET /metrics HTTP/1.1\r\n" + b"X-A: b\r\n" * 65 + b"\r\n", b"HTTP/1.1 431 "),
        (b"GET /metrics HTTP/1.1\r\nX-A: " + b"b" * 17_000 + b"\r\n\r\n", b"HTTP/1.1 431 "),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", b"HTTP/1.1 414 "),
    ],
)
def test_bad_heads_get_a_status_line_and_a_close(
    server: MetricsServer, request_bytes: bytes, status: bytes
) -> None:
    """Malformed request lines, HTTP/2, folded or malformed headers and heads over the limits
    get an HTTP/1.1 answer with a status line (not an HTML page, not silence), then the
    server closes the connection; the server goes on serving."""
    line, data = status_and_close(server.port, request_bytes)  # closed by the server
    assert line.startswith(status), data[:200]
    assert b"\r\nConnection: close\r\n" in data
    healthz = requests.get(f"http://127.0.0.1:{server.port}/healthz", timeout=SAFETY_TIMEOUT)
    assert healthz.status_code == 200


def test_http09_is_answered_at_once(server: MetricsServer) -> None:
    """``GET /healthz`` and a line end (HTTP/0.9, no blank line follows) gets the body alone,
    and the connection closed (no blank line awaited)."""
    _, data = status_and_close(server.port, b"GET /healthz\r\n")
    assert data == b"ok\n"


def test_huge_head_is_refused_before_it_is_read(server: MetricsServer) -> None:
    """A 6 MB head (98 headers of 64 kB, within what the stdlib accepted) gets 431 after at
    most 16 KiB are buffered; the rest is drained, not kept."""
    head = b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 64_000 + b"\r\n" * 1
    line, _ = status_and_close(server.port, head * 98 + b"\r\n")
    assert line.startswith(b"HTTP/1.1 431")


def test_stalled_heads_do_not_keep_a_scrape_out_and_time_out_as_a_whole() -> None:
    """300 connections trickling a head: a scrape still answers; a head that keeps trickling
    (so no single wait is long) is answered 408 and closed when the head timeout (2 s here,
    on the server's clock moved by hand) runs out, counted from its connection."""
    clock = FakeClock()
    srv = MetricsServer(
        "127.0.0.1", 0, metrics=parts, ready=lambda: True, clock=clock,
        limits=Limits(head_timeout=2.0),
    )  # fmt: skip
    srv.start()
    stalled: list[socket.socket] = []
    trickler = socket.create_connection(("127.0.0.1", srv.port), timeout=SAFETY_TIMEOUT)
    try:
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=SAFETY_TIMEOUT)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost")
            stalled.append(sock)
        answer = requests.get(f"http://127.0.0.1:{srv.port}/healthz", timeout=SAFETY_TIMEOUT)
        assert answer.status_code == 200
        for _ in range(6):  # a byte each 0.3 s of the server's time: 1.8 s, still in time
            trickler.sendall(b"G")
            clock.advance(0.3)
        trickler.settimeout(0.2)
        with pytest.raises(TimeoutError):
            trickler.recv(4096)  # no answer yet
        trickler.settimeout(SAFETY_TIMEOUT)
        trickler.sendall(b"E")
        clock.advance(0.3)  # 2.1 s since the connection
        assert trickler.recv(4096).startswith(b"HTTP/1.1 408 Request Timeout")
        assert stalled[-1].recv(4096).startswith(b"HTTP/1.1 408")
    finally:
        trickler.close()
        for sock in stalled:
            sock.close()
        srv.stop()


def test_the_oldest_waiting_connection_is_closed_at_the_cap() -> None:
    """With ``max_waiting`` 20, 30 stalled connections: the 10 oldest are closed, the newest
    stay, and a scrape (the newest of all) is served."""
    srv = MetricsServer(
        "127.0.0.1", 0, metrics=parts, ready=lambda: True, limits=Limits(max_waiting=20)
    )
    srv.start()
    stalled: list[socket.socket] = []

    def accepted(sock: socket.socket) -> Callable[[], bool]:
        port = sock.getsockname()[1]
        return lambda: any(c.sock.getpeername()[1] == port for c in list(srv._waiting.values()))

    try:
        for _ in range(30):
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=SAFETY_TIMEOUT)
            sock.sendall(b"GET /")
            stalled.append(sock)
            wait_until(accepted(sock), "the server accepted it (in this order)")
        healthz = requests.get(f"http://127.0.0.1:{srv.port}/healthz", timeout=SAFETY_TIMEOUT)
        assert healthz.status_code == 200
        for sock in stalled[:10]:
            assert sock.recv(100) == b""  # closed by the server, without an answer
        for sock in stalled[-15:]:
            sock.settimeout(0.05)
            with pytest.raises(TimeoutError):
                sock.recv(100)
    finally:
        for sock in stalled:
            sock.close()
        srv.stop()


def test_keep_alive_and_pipelined_requests() -> None:
    """Two pipelined requests in one packet get two answers in order; HTTP/1.0 closes unless
    it asks to keep alive."""
    srv = MetricsServer("127.0.0.1", 0, metrics=lambda gz: b"up 1\n", ready=lambda: True)
    srv.start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=SAFETY_TIMEOUT) as conn:
            conn.sendall(
                b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            data = b""
            while not data.endswith(b"up 1\n"):
                chunk = conn.recv(65536)
                assert chunk, data
                data += chunk
            first, second = data.split(b"HTTP/1.1 200 OK")[1:]
            assert first.endswith(b"\r\n\r\nok\n") and second.endswith(b"\r\n\r\nup 1\n")
        line, data = status_and_close(srv.port, b"GET /healthz HTTP/1.0\r\n\r\n")
        assert line == b"HTTP/1.1 200 OK" and data.endswith(b"\r\n\r\nok\n")
        with socket.create_connection(("127.0.0.1", srv.port), timeout=SAFETY_TIMEOUT) as conn:
            for _ in range(2):
                conn.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                _, headers, body = read_response(conn)
                assert body == b"ok\n" and headers["connection"] == "keep-alive"
    finally:
        srv.stop()


def received(conn: socket.socket) -> bytes:
    chunk = conn.recv(1 << 16)
    assert chunk, "the connection closed before the whole body came"
    return chunk


def streamed_server(body: Callable[[], Streamed]) -> MetricsServer:
    srv = MetricsServer("127.0.0.1", 0, metrics=lambda gz: body(), ready=lambda: True)
    srv.start()
    return srv


def test_a_streamed_body_leaves_a_piece_at_a_time_and_is_never_joined() -> None:
    """The plain text is made while it is sent: the client has the head and the first piece
    before the second is asked for (were it joined first, nothing would arrive)."""
    first, second = b"a" * 100_000, b"b" * 50_000
    second_asked = threading.Event()
    go_on = threading.Event()

    def pieces() -> Iterator[bytes]:
        yield first
        second_asked.set()
        assert go_on.wait(SAFETY_TIMEOUT)
        yield second

    srv = streamed_server(lambda: Streamed(len(first) + len(second), pieces()))
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=SAFETY_TIMEOUT) as conn:
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while len(data.partition(b"\r\n\r\n")[2]) < len(first):
                data += received(conn)
            head, _, body = data.partition(b"\r\n\r\n")
            assert b"Content-Length: 150000" in head and body == first
            assert second_asked.wait(SAFETY_TIMEOUT)  # and the rest is still being made
            go_on.set()
            while len(body) < len(first) + len(second):
                body += received(conn)
            assert body == first + second
    finally:
        go_on.set()
        srv.stop()


def test_a_streamed_body_shorter_than_announced_closes_the_connection() -> None:
    """A client must not wait for bytes that will never come: the connection is closed."""
    srv = streamed_server(lambda: Streamed(10, iter((b"12345",))))
    try:
        with capture_logs() as logs, socket.create_connection(
            ("127.0.0.1", srv.port), timeout=SAFETY_TIMEOUT
        ) as conn:
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := conn.recv(1 << 16):
                data += chunk
            assert data.endswith(b"\r\n\r\n12345")  # then the close, not a hang
        errors = [e for e in logs if e["log_level"] == "error"]
        assert errors and errors[0]["sent"] == 5 and errors[0]["length"] == 10  # a bug: said
    finally:
        srv.stop()


def test_head_never_makes_a_streamed_body() -> None:
    made = []

    def pieces() -> Iterator[bytes]:
        made.append(1)
        yield b"x" * 7

    srv = streamed_server(lambda: Streamed(7, pieces()))
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=SAFETY_TIMEOUT) as conn:
            conn.sendall(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            _, headers, _ = read_response(conn, head_only=True)
            assert headers["content-length"] == "7"
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(conn)[2] == b"x" * 7
        assert made == [1]  # once, for the GET
    finally:
        srv.stop()
