"""Authentication work is bounded, and clients that never read cannot make a scrape get 503.

Counted through seams, never timed: ``AuthGuard.checks`` (password checks run, i.e. bcrypt
calls), a counting fake password check, ``AnswerPool.shed``; time moves by hand
(``FakeClock``) so the limits' refills happen exactly when a test says.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
from collections.abc import Iterator

import bcrypt
import pytest

from do_exporter.authguard import AuthGuard, AuthLimits, Verdict
from do_exporter.server import TARPIT, Limits, MetricsServer
from do_exporter.webconfig import BasicAuth, WebConfig
from tests.support import FakeClock, wait_until

GOOD = "Basic " + base64.b64encode(b"prom:right").decode()
WRONG = "Basic " + base64.b64encode(b"prom:wrong").decode()


class CountingCheck:
    """A password check that counts its calls; ``gate`` (if set) holds each call."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def check(self, header: str | None) -> bool:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            self.gate.wait()
        return header == GOOD


def test_failures_from_one_address_are_limited_then_refill() -> None:
    clock = FakeClock()
    auth = CountingCheck()
    guard = AuthGuard(auth, clock=clock)
    verdicts = [guard.check(WRONG, "10.0.0.1") for _ in range(50)]
    assert verdicts[:5] == [Verdict.DENIED] * 5
    assert set(verdicts[5:]) == {Verdict.LIMITED}
    assert auth.calls == 5  # no bcrypt for a limited request
    clock.advance(AuthLimits().per_client_every)
    assert guard.check(WRONG, "10.0.0.1") is Verdict.DENIED
    assert guard.check(WRONG, "10.0.0.1") is Verdict.LIMITED
    assert auth.calls == 6
    assert guard.check(WRONG, "10.0.0.2") is Verdict.DENIED  # another address has its own


def test_failures_overall_are_limited_across_addresses() -> None:
    clock = FakeClock()
    auth = CountingCheck()
    limits = AuthLimits()
    guard = AuthGuard(auth, clock=clock, limits=limits)
    verdicts = [guard.check(WRONG, f"10.0.{i // 250}.{i % 250}") for i in range(300)]
    assert verdicts.count(Verdict.DENIED) == limits.overall_burst
    assert auth.calls == limits.overall_burst
    clock.advance(10 * limits.overall_every)
    more = [guard.check(WRONG, f"10.1.0.{i}") for i in range(100)]
    assert more.count(Verdict.DENIED) == 10 and auth.calls == limits.overall_burst + 10


def test_a_remembered_password_is_never_limited_nor_checked_again() -> None:
    auth = CountingCheck()
    guard = AuthGuard(auth, clock=FakeClock())
    assert guard.check(GOOD, "10.0.0.1") is Verdict.ALLOWED
    for i in range(300):  # exhausts the per-address and the overall limits
        guard.check(WRONG, f"10.0.1.{i % 200}")
    assert guard.check(WRONG, "10.0.0.1") is Verdict.LIMITED
    calls = auth.calls
    assert [guard.check(GOOD, "10.0.0.1") for _ in range(100)] == [Verdict.ALLOWED] * 100
    assert auth.calls == calls


def test_headers_that_are_not_basic_cost_nothing() -> None:
    auth = CountingCheck()
    guard = AuthGuard(auth, clock=FakeClock())
    for header in (None, "", "Bearer x", "Digest y"):
        for _ in range(100):
            assert guard.check(header, "10.0.0.1") is Verdict.DENIED
    assert auth.calls == 0
    assert guard.check(WRONG, "10.0.0.1") is Verdict.DENIED  # no limit was used up
    assert auth.calls == 1


def test_one_password_check_at_a_time() -> None:
    """While a check runs, another request needing one is limited, not queued on bcrypt."""
    auth = CountingCheck()
    auth.gate = threading.Event()
    guard = AuthGuard(auth, clock=FakeClock())
    first: list[Verdict] = []
    thread = threading.Thread(target=lambda: first.append(guard.check(GOOD, "10.0.0.1")))
    thread.start()
    try:
        wait_until(auth.entered.is_set, "the first check runs")
        assert guard.check(WRONG, "10.0.0.2") is Verdict.LIMITED
        assert auth.calls == 1
    finally:
        auth.gate.set()
        thread.join()
    assert first == [Verdict.ALLOWED]


# -- over real sockets ------------------------------------------------------------------------


def request(port: int, header: str | None, path: str = "/healthz") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    auth = f"Authorization: {header}\r\n" if header else ""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
    return sock


def status_of(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


@pytest.fixture
def auth_server() -> Iterator[tuple[MetricsServer, FakeClock]]:
    clock = FakeClock()
    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=4))
    web = WebConfig(auth=BasicAuth({"prom": hashed}))
    server = MetricsServer(
        "127.0.0.1", 0, metrics=lambda gz: b"up 1\n", ready=lambda: True, web=web, clock=clock
    )
    server.start()
    yield server, clock
    server.stop()


def test_a_password_flood_runs_few_bcrypt_checks_and_prometheus_still_gets_200(
    auth_server: tuple[MetricsServer, FakeClock],
) -> None:
    """Prometheus is in (its password remembered); 300 requests with a wrong password
    follow: only the per-address burst of them runs bcrypt, the rest get 429 (after the
    tarpit, here moved by hand) and Prometheus' scrapes on its connection answer 200."""
    server, clock = auth_server
    assert server.auth is not None
    prometheus = request(server.port, GOOD, "/metrics")
    assert status_of(prometheus) == b"HTTP/1.1 200 OK"
    flood = [request(server.port, WRONG) for _ in range(300)]
    try:
        wait_until(lambda: server.auth is not None and server.auth.checks >= 6, "the burst")
        for _ in range(5):
            prometheus.sendall(f"GET /metrics HTTP/1.1\r\nAuthorization: {GOOD}\r\n\r\n".encode())
            assert status_of(prometheus) == b"HTTP/1.1 200 OK"
        clock.advance(TARPIT)
        statuses = [status_of(sock) for sock in flood]
        assert statuses.count(b"HTTP/1.1 401 Unauthorized") == AuthLimits().per_client_burst
        assert statuses.count(b"HTTP/1.1 429 Too Many Requests") == 300 - 5
        assert server.auth.checks == 1 + 5  # Prometheus' first check and the burst
    finally:
        prometheus.close()
        for sock in flood:
            sock.close()


def test_clients_that_never_read_give_way_to_a_fresh_request() -> None:
    """Every answer thread is stuck writing to a client that never reads: a fresh request
    still gets 200 (the oldest stuck answer is cut for it), not 503, once those answers
    are older than ``shed_after``; while they are younger, it gets 503."""
    clock = FakeClock()
    body = b"x" * (16 << 20)  # far more than the socket buffers hold
    server = MetricsServer(
        "127.0.0.1", 0, metrics=lambda gz: body, ready=lambda: True, clock=clock,
        limits=Limits(max_answering=4),
    )  # fmt: skip
    server.start()
    readers: list[socket.socket] = []
    try:
        for _ in range(4):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            readers.append(sock)
        pool = server._workers
        wait_until(lambda: len(pool._busy) == 4, "four answers are stuck writing")
        young = request(server.port, None)
        assert status_of(young) == b"HTTP/1.1 503 Service Unavailable"
        young.close()
        clock.advance(Limits().shed_after)
        for _ in range(3):
            fresh = request(server.port, None)
            assert status_of(fresh) == b"HTTP/1.1 200 OK"
            fresh.close()
        assert pool.shed >= 1
    finally:
        for sock in readers:
            with contextlib.suppress(OSError):
                sock.close()
        server.stop()
