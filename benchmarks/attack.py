"""Hostile clients and a hostile API against a real exporter process, on loopback only.

Each attack starts its own ``do-exporter`` process (so ``VmHWM``, the peak resident memory
that Linux keeps per process, belongs to that attack alone) and reports the peak, the
memory before the attack, and whether scrapes (or, for the API attacks, the ``--once``
exposition) still came out:

- ``slowloris``: 300 connections each send one byte of a request head every 5 s; a scrape
  every 0.5 s meanwhile (and how long the server held the stalled connections).
- ``heads``: 40 connections at once each send a 6.2 MB request head (98 headers of 63.5 kB),
  then a scrape. ``heads-auth`` is the same with basic auth on (``--web.config.file``).
- ``gzip-bomb``: ``do-exporter --once`` against a fake API whose every answer is a gzip body
  that inflates to 2 GiB.
- ``chunked``: ``--once`` against a fake API whose every answer is an endless chunked body.
- ``bomb-64``: ``--once --max-concurrency 64`` against a fake API listing 64 namespaces,
  whose every objects page is a gzip body inflating to 2 GiB, sent after 0.5 s of latency:
  64 walks read bombs at once (issue 16: 1.5 GiB before the process-wide byte budget).

Every exporter process is killed after ``--limit`` seconds (60) or when its RSS passes
``--rss-cap`` MiB (3072), and the report says so. All traffic stays on 127.0.0.1.

    python benchmarks/attack.py                 # every attack, a table
    python benchmarks/attack.py --json --only slowloris --only heads
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HOST = "127.0.0.1"
ATTACKS = ("slowloris", "heads", "heads-auth", "gzip-bomb", "chunked", "bomb-64")
BOMB_NAMESPACES = 64
USER, PASSWORD = "prometheus", "attack-bench-password"
Row = dict[str, Any]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of a process, in KiB (empty once it is gone)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


class Watch:
    """Samples a process's memory every 50 ms; kills it past a time limit or an RSS cap."""

    def __init__(self, proc: subprocess.Popen[bytes], limit_s: float, cap_mib: int) -> None:
        self.proc, self.limit_s, self.cap_kib = proc, limit_s, cap_mib * 1024
        self.hwm_kib = 0
        self.killed: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit_s
        while not self._stop.is_set() and self.proc.poll() is None:
            mem = memory_kib(self.proc.pid)
            self.hwm_kib = max(self.hwm_kib, mem.get("VmHWM", 0))
            if mem.get("VmRSS", 0) > self.cap_kib:
                self.killed = f"RSS over {self.cap_kib // 1024} MiB"
            elif time.monotonic() > deadline:
                self.killed = f"still running after {self.limit_s:g} s"
            if self.killed:
                self.proc.kill()
                return
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.hwm_kib = max(self.hwm_kib, memory_kib(self.proc.pid).get("VmHWM", 0))


@contextlib.contextmanager
def exporter(limit_s: float, cap_mib: int, web_config: str | None = None) -> Iterator[Any]:
    """``do-exporter --demo`` on a loopback port, ready; yields (port, process, watch)."""
    port = free_port()
    args = [PYTHON, "-m", "do_exporter", "--demo", "--listen-address", f"{HOST}:{port}"]
    args += ["--log-level", "error"]
    if web_config:
        args += ["--web.config.file", web_config]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watch = Watch(proc, limit_s, cap_mib)
    try:
        deadline = time.monotonic() + 30
        while scrape(port, auth=bool(web_config), path="/readyz")[0] != 200:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the exporter did not become ready")
            time.sleep(0.2)
        yield port, proc, watch
    finally:
        watch.stop()
        proc.kill()
        proc.wait()


def scrape(
    port: int, *, auth: bool = False, path: str = "/metrics", timeout: float = 5.0
) -> tuple[int, float]:
    """One GET on a fresh connection: (status or 0 on failure, seconds)."""
    headers = {"Accept-Encoding": "gzip"}
    if auth:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    started = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        status = response.status
    except OSError:
        status = 0
    finally:
        conn.close()
    return status, time.perf_counter() - started


def scrape_summary(results: list[tuple[int, float]]) -> Row:
    ok = [s for status, s in results if status == 200]
    return {
        "scrapes": len(results),
        "scrapes_ok": len(ok),
        "scrape_p50_ms": round(statistics.median(ok) * 1000, 1) if ok else None,
        "scrape_max_ms": round(max(ok) * 1000, 1) if ok else None,
    }


# -- attacks on the endpoint ----------------------------------------------------------------


def slowloris(port: int, *, conns: int = 300, every: float = 5.0, seconds: float = 30.0) -> Row:
    """``conns`` connections trickle a request head, one byte each ``every`` seconds."""
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-a: b\r\n" * 1000
    socks: list[socket.socket | None] = []
    for _ in range(conns):
        sock = socket.create_connection((HOST, port), timeout=5)
        sock.setblocking(False)
        socks.append(sock)
    sent = [0] * conns
    answers: dict[str, int] = {}
    results: list[tuple[int, float]] = []
    held_at: list[tuple[float, int]] = []
    started = time.monotonic()
    next_scrape = started + 1.0
    while time.monotonic() - started < seconds:
        now = time.monotonic()
        for i, sock in enumerate(socks):
            if sock is None:
                continue
            if now - started >= (i % 50) * every / 50 + sent[i] * every:  # staggered
                try:
                    sock.send(head[sent[i] : sent[i] + 1])
                    sent[i] += 1
                except OSError:
                    answers["send failed"] = answers.get("send failed", 0) + 1
                    sock.close()
                    socks[i] = None
                    continue
            try:
                answer = sock.recv(64)  # an answer (408) or the end: the server let go
            except BlockingIOError:
                continue
            except OSError:
                answer = b""
            line = answer.split(b"\r\n", 1)[0].decode("latin-1") or "closed"
            answers[line] = answers.get(line, 0) + 1
            sock.close()
            socks[i] = None
        if now >= next_scrape:
            results.append(scrape(port))
            held_at.append((round(now - started, 1), sum(s is not None for s in socks)))
            next_scrape = now + 0.5
        time.sleep(0.02)
    for sock in socks:
        if sock is not None:
            sock.close()
    first_zero = next((t for t, n in held_at if n == 0), None)
    return {
        **scrape_summary(results),
        "stalled_conns": conns,
        "stalled_still_open_at_end": held_at[-1][1] if held_at else None,
        "all_stalled_closed_after_s": first_zero,
        "stalled_answers": answers,
    }


def big_heads(port: int, *, conns: int = 40, auth: bool = False) -> Row:
    """``conns`` connections at once each send 98 headers of 63.5 kB (6.2 MB of head: within
    the 100 lines of at most 64 KiB, the blank one included, that the stdlib's parser took
    whole)."""
    header = b"X-Pad-%02d: " + b"a" * 63_500 + b"\r\n"
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"".join(header % i for i in range(98))
    head += b"\r\n"
    answers: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        answer = "closed"
        try:
            with socket.create_connection((HOST, port), timeout=20) as sock:
                with contextlib.suppress(OSError):
                    sock.sendall(head)
                line = sock.recv(64).split(b"\r\n", 1)[0]
                answer = line.decode("latin-1") or "closed"
        except OSError as exc:
            answer = type(exc).__name__
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=one) for _ in range(conns)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    took = time.monotonic() - started
    results = [scrape(port, auth=auth) for _ in range(5)]
    counts: dict[str, int] = {}
    for answer in answers:
        counts[answer] = counts.get(answer, 0) + 1
    return {
        **scrape_summary(results),
        "head_bytes": len(head),
        "answers": counts,
        "attack_s": round(took, 2),
    }


# -- attacks from the API side --------------------------------------------------------------


def gzip_bomb(size: int = 2 << 30) -> bytes:
    """A gzip stream of ``size`` zero bytes (about 2 MB for 2 GiB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    parts = [packer.compress(chunk) for _ in range(size >> 20)]
    return b"".join(parts) + packer.flush()


def hostile_api(kind: str, bomb: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if kind == "bomb-64" and not self.path.split("?")[0].endswith("/objects"):
                self._namespaces()
                return
            if kind == "bomb-64":
                time.sleep(0.5)  # the latency: every walk is reading at once
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if kind in ("gzip-bomb", "bomb-64"):
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(bomb)))
                self.end_headers()
                self.wfile.write(bomb)
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            start = b'{"success":true,"errors":[],"messages":[],"result":['
            self.wfile.write(b"%x\r\n%s\r\n" % (len(start), start))
            filler = b" " * 65536
            chunk = b"%x\r\n%s\r\n" % (len(filler), filler)
            ends = time.monotonic() + 120
            with contextlib.suppress(OSError):
                while time.monotonic() < ends:
                    self.wfile.write(chunk)

        do_POST = do_GET

        def _namespaces(self) -> None:
            items = [{"id": f"{i:032x}", "name": f"ns{i}"} for i in range(BOMB_NAMESPACES)]
            info = {"page": 1, "per_page": 1000, "total_pages": 1, "count": len(items)}
            body = json.dumps({"success": True, "errors": [], "result": items, "result_info": info})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((HOST, 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def api_attack(kind: str, limit_s: float, cap_mib: int, bomb: bytes) -> Row:
    server = hostile_api(kind, bomb)
    args = [PYTHON, "-m", "do_exporter", "--once", "--log-level", "error"]
    args += ["--api-url", f"http://{HOST}:{server.server_address[1]}"]
    args += ["--api-token", "t" * 40, "--account-id", "0123456789abcdef" * 2]
    if kind == "bomb-64":
        args += ["--max-concurrency", "64", "--no-analytics"]
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL)
        watch = Watch(proc, limit_s, cap_mib)
        proc.wait()
        watch.stop()
        out.seek(0)
        exposition = out.read()
    server.shutdown()
    server.server_close()
    return {
        "exit_code": proc.returncode,
        "killed": watch.killed,
        "seconds": round(time.monotonic() - started, 1),
        "exposition_printed": b"cloudflare_durable_objects_exporter_" in exposition,
        "api_failure_reported": b"last_poll_success" in exposition,
        "peak_rss_mib": round(watch.hwm_kib / 1024, 1),
    }


# -- driver ---------------------------------------------------------------------------------


def web_config(folder: str) -> str:
    import bcrypt  # a dependency of the exporter; only the heads-auth attack needs it

    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    path = Path(folder) / "web.yml"
    path.write_text(f"basic_auth_users:\n  {USER}: '{hashed}'\n")
    return str(path)


def endpoint_attack(
    name: str, run: Callable[[int], Row], limit_s: float, cap_mib: int, config: str | None
) -> Row:
    with exporter(limit_s, cap_mib, config) as (port, proc, watch):
        before = memory_kib(proc.pid)
        row = run(port)
        alive = proc.poll() is None
        watch.stop()
        after = memory_kib(proc.pid)
    return {
        "attack": name,
        "rss_before_mib": round(before.get("VmRSS", 0) / 1024, 1),
        "peak_rss_mib": round(max(watch.hwm_kib, after.get("VmHWM", 0)) / 1024, 1),
        "rss_after_mib": round(after.get("VmRSS", 0) / 1024, 1),
        "alive": alive,
        "killed": watch.killed,
        **row,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=ATTACKS)
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--limit", type=float, default=60.0, help="seconds per exporter")
    parser.add_argument("--rss-cap", type=int, default=3072, help="MiB; kill the exporter above")
    parser.add_argument("--slowloris-seconds", type=float, default=30.0)
    ns = parser.parse_args()
    rows: list[Row] = []
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        for name in ns.only or ATTACKS:
            if name == "slowloris":
                row = endpoint_attack(
                    name,
                    lambda port: slowloris(port, seconds=ns.slowloris_seconds),
                    ns.limit,
                    ns.rss_cap,
                    None,
                )
            elif name in ("heads", "heads-auth"):
                auth = name == "heads-auth"
                config = web_config(folder) if auth else None
                row = endpoint_attack(
                    name, partial(big_heads, auth=auth), ns.limit, ns.rss_cap, config
                )
            else:
                bomb = gzip_bomb() if name in ("gzip-bomb", "bomb-64") else b""
                row = {"attack": name, **api_attack(name, ns.limit, ns.rss_cap, bomb)}
            rows.append(row)
            if not ns.json:
                print(json.dumps(row), flush=True)
    doc = {"loadavg_before": [round(x, 2) for x in load], "nproc": os.cpu_count(), "rows": rows}
    if ns.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"load average before: {doc['loadavg_before']}, cores: {doc['nproc']}")


if __name__ == "__main__":
    main()
