"""Shutdown ends whatever is in flight: SIGTERM while the API hangs or trickles.

The daemon's first request is the start-up token verification. Against an API that accepts
and never answers, or drips its response head or body a byte at a time for ever, the
process must still exit (status 0) after SIGTERM: the verification runs on a daemon thread
that shutdown cancels and does not wait for (``do_exporter.jobs``). The waits here have only
a safety timeout; the bound itself (seconds) is measured by ``benchmarks/attack.py
--only shutdown-hung`` and documented, not asserted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ACCOUNT_A, TOKEN
from tests.ports import free_port
from tests.support import SAFETY_TIMEOUT, wait_until

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n"


class HungAPI:
    """A loopback server that reads a request, then: ``silent`` says nothing; ``head``
    drips a response head that never ends; ``body`` sends a head and drips a body that never
    ends (a byte each 0.2 s). ``asked`` is set once a request has arrived."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.asked = threading.Event()
        self.done = threading.Event()
        self.conns: list[socket.socket] = []
        self.dripped = 0  # bytes dripped so far
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.recv(65536)
            self.asked.set()
            if self.kind == "body":
                conn.sendall(HEAD + b"\r\n")
            drip = HEAD + b"X-Drip: " if self.kind == "head" else b""
            i = 0
            while not self.done.wait(0.2):
                if self.kind != "silent":
                    conn.sendall(drip[i : i + 1] if i < len(drip) else b"a")
                    i += 1
                    self.dripped += 1

    def close(self) -> None:
        self.done.set()
        self.listener.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def hung_api(request: pytest.FixtureRequest) -> Iterator[HungAPI]:
    api = HungAPI(request.param)
    yield api
    api.close()


@pytest.mark.parametrize("hung_api", ["silent", "head", "body"], indirect=True)
def test_sigterm_during_a_hung_token_verification_exits(hung_api: HungAPI, tmp_path: Path) -> None:
    """SIGTERM while the start-up verification waits on a silent or trickling API: the
    process exits with status 0 (today's main: 27 s, 58 s, and never for an endless head)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDFLARE_", "DO_"))}
    env["CLOUDFLARE_API_TOKEN"] = TOKEN
    with (tmp_path / "stderr").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "do_exporter", "--api-url", hung_api.url,
             "--account-id", ACCOUNT_A, "--web.listen-address", f"127.0.0.1:{free_port()}",
             "--log-format", "json"],
            stdout=subprocess.DEVNULL, stderr=err, env=env,
        )  # fmt: skip
        try:
            wait_until(hung_api.asked.is_set, "the verification request reaches the API")
            if hung_api.kind != "silent":
                wait_until(lambda: hung_api.dripped >= 3, "a few bytes have trickled in")
            assert proc.poll() is None
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(SAFETY_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log = (tmp_path / "stderr").read_text()
    assert code == 0, log
    assert '"event": "stopped"' in log
    assert TOKEN not in log
