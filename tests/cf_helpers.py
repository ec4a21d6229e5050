"""What the Cloudflare client's tests share: canned envelopes, a client on requests-mock,
metric readers, and a loopback server that answers byte for byte (``RawServer``)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import random
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry

from do_exporter.cloudflare import CloudflareClient, RetryPolicy
from do_exporter.config import Secret
from do_exporter.metrics.selfmetrics import ExporterMetrics
from do_exporter.ratelimit import RateLimiter
from tests.conftest import FAST_RETRY

BASE = "https://api.test/client/v4"
ACC = "0123456789abcdef0123456789abcdef"
NS_URL = f"{BASE}/accounts/{ACC}/workers/durable_objects/namespaces"
NSID = "b" * 32
OBJ_URL = f"{NS_URL}/{NSID}/objects"
TOKEN = "tok-very-secret-123"


def env(result: Any, info: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"success": True, "errors": [], "messages": [], "result": result}
    if info is not None:
        body["result_info"] = info
    body.update(extra)
    return body


def err(code: int, message: str) -> dict[str, Any]:
    return {
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": None,
    }


def nid(tag: str) -> str:
    """A 32-hex namespace or account id, stable per tag."""
    return hashlib.md5(tag.encode()).hexdigest()


def objects(n: int, stored_every: int = 2) -> list[dict[str, Any]]:
    return [{"id": f"{i:064x}", "hasStoredData": i % stored_every == 0} for i in range(n)]


@pytest.fixture
def metrics() -> ExporterMetrics:
    return ExporterMetrics()


@pytest.fixture
def client(metrics: ExporterMetrics) -> CloudflareClient:
    return CloudflareClient(
        requests.Session(),
        BASE,
        Secret(TOKEN),
        limiter=RateLimiter(100_000),
        retry=FAST_RETRY,
        observer=metrics,
        rng=random.Random(3),
    )


def sample(metrics: ExporterMetrics, name: str, **labels: str) -> float | None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    return registry.get_sample_value(name, labels)


def api_errors(metrics: ExporterMetrics, endpoint: str, error_code: str) -> float | None:
    return sample(
        metrics,
        "cloudflare_durable_objects_exporter_api_errors_total",
        endpoint=endpoint,
        error_code=error_code,
    )


def api_requests(metrics: ExporterMetrics, endpoint: str, code: str) -> float | None:
    return sample(
        metrics,
        "cloudflare_durable_objects_exporter_api_requests_total",
        endpoint=endpoint,
        code=code,
    )



Answer = Callable[[socket.socket], bool]  # writes an answer; True keeps the connection


class RawServer:
    """A loopback HTTP/1.1 server answering request n with ``answers[n]`` (the last one
    repeats), byte for byte, counting connections and requests."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = answers
        self.connections = 0
        self.requests = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/client/v4"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                self.connections += 1
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while True:
                request = b""
                while b"\r\n\r\n" not in request:
                    data = conn.recv(65536)
                    if not data:
                        return
                    request += data
                answer = self.answers[min(self.requests, len(self.answers) - 1)]
                self.requests += 1
                if not answer(conn):
                    return

    def close(self) -> None:
        self.listener.close()


def http_answer(body: bytes, *head: str, status: str = "200 OK") -> Answer:
    def answer(conn: socket.socket) -> bool:
        lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *head]
        conn.sendall("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
        return True

    return answer


OK_BODY = json.dumps(env([{"id": nid("a")}], {"total_pages": 1})).encode()


@pytest.fixture
def raw_server() -> Iterator[Callable[[list[Answer]], RawServer]]:
    servers: list[RawServer] = []

    def make(answers: list[Answer]) -> RawServer:
        servers.append(RawServer(answers))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def real_client(url: str, metrics: ExporterMetrics, **kwargs: Any) -> CloudflareClient:
    kwargs.setdefault("retry", RetryPolicy(attempts=1))
    return CloudflareClient(
        requests.Session(),
        url,
        Secret(TOKEN),
        limiter=RateLimiter(100_000),
        observer=metrics,
        max_body_bytes=1024 * 1024,
        **kwargs,
    )


def endless_chunks(conn: socket.socket) -> bool:
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # until the client hangs up
        conn.sendall(chunk)
    return False


GZIP_BOMB = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)  # ~64 kB
DEFLATE_BOMB = zlib.compress(b"\0" * (64 * 1024 * 1024), 9)


# The bombs are 64 kB on the wire: read to their end in one read, their connection is clean
