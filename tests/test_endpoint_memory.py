"""Memory of a real exporter process under large request heads, from /proc/<pid>/status."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from pathlib import Path

import requests

from tests.ports import free_port
from tests.support import wait_until
from tests.test_cli import clean_env


def vm_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    raise AssertionError(f"no {key} for {pid}")


def test_large_request_heads_do_not_grow_the_process() -> None:
    """20 connections at once each send a 2 MB head (31 headers of 63 kB: within what the
    stdlib parser accepted, which kept every byte): all get 431, the peak RSS (VmHWM) grows
    by less than 8 MiB (it grew by about twice the bytes sent before heads were bounded),
    and scrapes go on."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "do_exporter", "--demo", "--listen-address", f"127.0.0.1:{port}",
         "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert proc.poll() is None, "the exporter exited"
            try:
                return requests.get(url + "/readyz", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(ready, "the exporter answers /readyz")
        requests.get(url + "/metrics", timeout=2)  # the first scrape's own allocations
        before = vm_kib(proc.pid, "VmHWM")
        head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
        head += b"".join(b"X-Pad-%02d: %s\r\n" % (i, b"a" * 63_000) for i in range(31)) + b"\r\n"
        answers: list[bytes] = []

        def send() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                with contextlib.suppress(OSError):  # refused before the whole head was sent
                    sock.sendall(head)
                answers.append(sock.recv(100).split(b"\r\n", 1)[0])

        threads = [threading.Thread(target=send) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        grown_mib = (vm_kib(proc.pid, "VmHWM") - before) / 1024
        assert grown_mib < 8, f"peak RSS grew by {grown_mib:.1f} MiB"
        assert answers == [b"HTTP/1.1 431 Request Header Fields Too Large"] * 20
        assert requests.get(url + "/metrics", timeout=2).status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
