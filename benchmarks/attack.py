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
import signal
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
# The runtime attacks (signals, shutdown, authentication, non-readers): defined at the end.
RUNTIME_ATTACKS = (
    "shutdown-hung", "shutdown-trickle-head", "shutdown-trickle-body",
    "sighup-storm", "sighup-bursts", "sigterm-storm", "sigint-storm",
    "password-flood", "non-readers",
)  # fmt: skip
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
    parser.add_argument("--only", action="append", choices=ATTACKS + RUNTIME_ATTACKS)
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--limit", type=float, default=60.0, help="seconds per exporter")
    parser.add_argument("--rss-cap", type=int, default=3072, help="MiB; kill the exporter above")
    parser.add_argument("--slowloris-seconds", type=float, default=30.0)
    ns = parser.parse_args()
    rows: list[Row] = []
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        for name in ns.only or ATTACKS:
            if name in RUNTIME_ATTACKS:
                row = {"attack": name, **runtime_attack(name, ns.limit, ns.rss_cap, folder)}
            elif name == "slowloris":
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


# -- runtime attacks: shutdown during a hung API, signal storms, auth floods, non-readers -----


def runtime_attack(name: str, limit_s: float, cap_mib: int, folder: str) -> Row:
    """One of ``RUNTIME_ATTACKS``, each against its own exporter process."""
    if name.startswith("shutdown-"):
        return shutdown_during_hung_api(name.removeprefix("shutdown-"), limit_s)
    if name.startswith("sig"):
        sig = {"sighup": signal.SIGHUP, "sigterm": signal.SIGTERM, "sigint": signal.SIGINT}
        kind, _, shape = name.partition("-")
        return signal_storm(sig[kind], bursts=shape == "bursts", limit_s=limit_s)
    config = web_config(folder) if name == "password-flood" else None
    run = password_flood if name == "password-flood" else non_readers
    return endpoint_attack(name, run, limit_s, cap_mib, config)


def silent_api(kind: str) -> tuple[socket.socket, threading.Event, Callable[[], None]]:
    """A loopback API that accepts and then: never answers (``hung``), drips a response head
    a byte a second (``trickle-head``), or sends a head and drips the body a byte a second
    (``trickle-body``). Returns (listener, an event set once a request arrived, stop)."""
    listener = socket.create_server((HOST, 0))
    listener.settimeout(0.2)
    asked = threading.Event()
    done = threading.Event()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n"

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.5)
            with contextlib.suppress(OSError):
                conn.recv(65536)
            asked.set()
            if kind == "trickle-body":
                with contextlib.suppress(OSError):
                    conn.sendall(head + b"\r\n")
            drip = head if kind == "trickle-head" else b" " * 100_000
            for i in range(len(drip)):
                if done.wait(1.0):
                    return
                if kind != "hung":
                    with contextlib.suppress(OSError):
                        conn.sendall(drip[i : i + 1])

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()

    def stop() -> None:
        done.set()
        listener.close()

    return listener, asked, stop


def shutdown_during_hung_api(kind: str, limit_s: float) -> Row:
    """The daemon starts against a silent API; SIGTERM 2 s into the start-up token
    verification; how long until the process has exited (killed at ``limit_s``)."""
    listener, asked, stop_api = silent_api(kind)
    args = [PYTHON, "-m", "do_exporter", "--log-level", "error", "--web.listen-address"]
    args += [f"{HOST}:{free_port()}", "--api-url", f"http://{HOST}:{listener.getsockname()[1]}"]
    args += ["--api-token", "t" * 40, "--account-id", "0123456789abcdef" * 2]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not asked.wait(30):
            return {"error": "the exporter sent no request"}
        time.sleep(2.0)  # in the middle of the verification (a benchmark, not a test)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = proc.wait(limit_s)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - started
    finally:
        proc.kill()
        proc.wait()
        stop_api()
    return {
        "exit_code": code,
        "exit_after_sigterm_s": round(took, 2) if code is not None else None,
        "still_running_after_s": None if code is not None else limit_s,
    }


def signal_storm(sig: int, *, bursts: bool, limit_s: float) -> Row:
    """``--demo``, ready; then 20,000 signals as fast as one process sends them (or, with
    ``bursts``, 100 bursts of 3 signals 20 ms apart). Then: alive? scrapes? For SIGHUP, a
    SIGTERM afterwards: exit status and time."""
    with exporter(limit_s, 3072) as (port, proc, _watch):
        sent, started = 0, time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            for _ in range(100) if bursts else range(1):
                for _ in range(3 if bursts else 20_000):
                    os.kill(proc.pid, sig)
                    sent += 1
                if bursts:
                    time.sleep(0.02)
        storm_s = time.monotonic() - started
        row: Row = {"signals_sent": sent, "storm_s": round(storm_s, 2)}
        if sig == signal.SIGHUP:
            time.sleep(1.0)  # a benchmark: let the storm's reloads settle
            row["alive_after"] = proc.poll() is None
            row.update(scrape_summary([scrape(port) for _ in range(5)]))
            stop_started = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        else:
            stop_started = started
        try:
            row["exit_code"] = proc.wait(limit_s)
            row["exit_s"] = round(time.monotonic() - stop_started, 2)
        except subprocess.TimeoutExpired:
            row["exit_code"], row["exit_s"] = None, f"still running after {limit_s:g} s"
    return row


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def password_flood(port: int, *, clients: int = 300, seconds: float = 20.0) -> Row:
    """``clients`` threads send requests with a wrong password in a loop (a fresh connection
    each); a scrape with the right password every 0.5 s meanwhile; the exporter's CPU."""
    pid = _exporter_pid(port)
    stop = threading.Event()
    answers: dict[str, int] = {}
    lock = threading.Lock()
    wrong = "Basic " + base64.b64encode(f"{USER}:wrong-password".encode()).decode()

    def attacker() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        while not stop.is_set():
            status = "error"
            try:  # keep-alive, as a client in a loop would; a new connection after an error
                conn.request("GET", "/metrics", headers={"Authorization": wrong})
                response = conn.getresponse()
                response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException):
                conn.close()
                stop.wait(0.5)
            with lock:
                answers[status] = answers.get(status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=attacker, daemon=True) for _ in range(clients)]
    cpu_before = cpu_seconds(pid)
    started = time.monotonic()
    for thread in threads:
        thread.start()
    results = _scrapes_for(port, seconds, auth=True)
    took = time.monotonic() - started
    cpu = cpu_seconds(pid) - cpu_before
    stop.set()
    for thread in threads:
        thread.join(15)
    return {
        **scrape_summary(results),
        **_statuses(results),
        "clients": clients,
        "attack_answers": answers,
        "exporter_cores": round(cpu / took, 2),
    }


def non_readers(port: int, *, per_second: float = 40.0, seconds: float = 20.0) -> Row:
    """A stream of clients (``per_second``) that each pipeline 200 requests for ``/metrics``
    (uncompressed: megabytes of answers, more than the socket buffers hold) and never read
    the answers, holding their connections open; a scrape every 0.5 s meanwhile."""
    stop = threading.Event()
    socks: list[socket.socket] = []

    def stream() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect((HOST, port))
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 200)
                socks.append(sock)
            stop.wait(1 / per_second)

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    results = _scrapes_for(port, seconds)
    stop.set()
    thread.join()
    for sock in socks:
        sock.close()
    return {**scrape_summary(results), **_statuses(results), "non_readers": len(socks)}


def _scrapes_for(port: int, seconds: float, *, auth: bool = False) -> list[tuple[int, float]]:
    results: list[tuple[int, float]] = []
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        results.append(scrape(port, auth=auth, timeout=15))
        time.sleep(0.5)
    return results


def _statuses(results: list[tuple[int, float]]) -> Row:
    counts: dict[str, int] = {}
    for status, _ in results:
        counts[str(status)] = counts.get(str(status), 0) + 1
    return {"scrape_statuses": counts}


def _exporter_pid(port: int) -> int:
    """The pid of the process listening on ``port`` (the exporter this attack started)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            inode = fields[9]
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            if os.readlink(fd) == f"socket:[{inode}]":
                return int(fd.parts[2])
    return 0


if __name__ == "__main__":
    main()
