"""The /metrics answer on the wire: headers and a body in parts, over plain TCP and TLS."""

from __future__ import annotations

import gzip
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from do_exporter.server import CONTENT_TYPE_PLAIN_0_0_4, Limits, MetricsServer
from do_exporter.webconfig import WebConfig
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
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        for _ in range(2):  # the second answer starts exactly where the first ended
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = read_response(conn)
            assert status == b"HTTP/1.1 200 OK"
            assert headers["content-type"] == CONTENT_TYPE_PLAIN_0_0_4
            assert "content-encoding" not in headers
            assert body == SNAPSHOT + OWN


def test_gzip_parts_are_two_members_of_one_stream(server: MetricsServer) -> None:
    answer = requests.get(
        f"http://127.0.0.1:{server.port}/metrics", headers={"Accept-Encoding": "gzip"}, timeout=10
    )
    assert answer.headers["Content-Encoding"] == "gzip"
    assert answer.headers["Vary"] == "Accept-Encoding"
    assert answer.content == SNAPSHOT + OWN  # requests decodes both members


def test_head_has_the_get_headers_and_no_body(server: MetricsServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
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


def test_parts_over_tls(certs: Path) -> None:  # noqa: F811
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certs / "server.crt", certs / "server.key")
    srv = MetricsServer("127.0.0.1", 0, metrics=parts, ready=lambda: True, web=WebConfig(tls=tls))
    srv.start()
    try:
        answer = requests.get(
            f"https://127.0.0.1:{srv.port}/metrics", verify=str(certs / "server.crt"), timeout=10
        )
        assert answer.status_code == 200 and answer.content == SNAPSHOT + OWN
    finally:
        srv.stop()


def test_a_slow_reader_is_cut_off_when_the_timeout_runs_out() -> None:
    """The answer timeout bounds the whole answer, not each write: a client that reads 256 kB
    every 20 ms (so no single write waits long; 64 MB would take ~5 s) is cut off after
    about the timeout."""
    body = b"x" * (64 << 20)
    srv = MetricsServer(
        "127.0.0.1", 0, metrics=lambda gz: body, ready=lambda: True,
        limits=Limits(answer_timeout=1.0),
    )  # fmt: skip
    srv.start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as conn:
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            started, received = time.monotonic(), 0
            while time.monotonic() - started < 20:
                try:
                    chunk = conn.recv(1 << 18)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                received += len(chunk)
                time.sleep(0.02)
            elapsed = time.monotonic() - started
    finally:
        srv.stop()
    assert received < len(body)
    assert elapsed < 3, f"still sending after {elapsed:.1f} s"
