"""Soak run: the daemon against a faulty simulator for a long time; RSS, fds and threads stay flat.

Runs the simulator (``python -m do_exporter.simulator``) and the exporter (``python -m
do_exporter --interval 10``) as two child processes. The simulator serves a mixed fault
profile (5xx, HTML 502s, 429 bursts with ``Retry-After``, resets, truncated and invalid JSON,
``success: false``, wrong types, slow answers). Every ``--sample-seconds`` the script reads
the exporter's RSS (``VmRSS``), open file descriptors (``/proc/PID/fd``) and threads
(``Threads`` in ``/proc/PID/status``), and scrapes ``/metrics``: every served object count
must equal the scenario's (no growth is configured, so the truth never changes).

At the end it prints a summary of each measure after a warm-up (first sample; start and end,
the medians of the first and last 10% of samples; max; least-squares slope per hour) and
exits 1 if any grew beyond its tolerance (end over start, or the peaks of the second half
over those of the first), if a served count was ever wrong, if a scrape failed, or if the
exporter died. ``--json`` also prints the summary as JSON.

    python benchmarks/soak.py --minutes 30          # the documented run
    python benchmarks/soak.py --minutes 1           # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TOKEN = "soak-token-5e1d0c9b7a-0123456789abcdefghi"  # 40 characters, like a real one
ACCOUNTS = ("1" * 32, "2" * 32)
PREFIX = "cloudflare_durable_objects"

# Object counts per account: one namespace of several pages, several of one page, an empty one.
SIZES = {ACCOUNTS[0]: [45_000, 9_999, 1, 0, 250], ACCOUNTS[1]: [20_001, 3, 77]}

FAULT_RULES: list[dict[str, Any]] = [
    {"fault": "status", "status": 500, "rate": 0.04},
    {"fault": "status", "status": 503, "rate": 0.02, "endpoint": "objects"},
    {"fault": "html", "status": 502, "rate": 0.02},
    {"fault": "status", "status": 429, "retry_after": 1, "rate": 0.01, "burst": 3},
    {"fault": "disconnect", "rate": 0.02},
    {"fault": "drop", "rate": 0.02, "endpoint": "objects"},
    {"fault": "truncated", "rate": 0.02},
    {"fault": "invalid_json", "rate": 0.01},
    {"fault": "success_false", "rate": 0.01},
    {"fault": "wrong_type", "rate": 0.01},
    {"fault": "missing_result_info", "rate": 0.01, "endpoint": "objects"},
    {"fault": "delay", "seconds": 4, "rate": 0.01},  # beyond the 3 s read timeout
]


def namespace_id(account: int, index: int) -> str:
    return f"{account + 1:08x}{index:024x}"


def scenario() -> dict[str, Any]:
    return {
        "description": "do-exporter soak: mixed faults, no growth",
        "seed": 11,
        "tokens": [{"value": TOKEN}],
        "rate_limit": {"requests": 10**9, "window_seconds": 300},
        "accounts": [
            {
                "id": acc,
                "name": f"soak{a}",
                "namespaces": [
                    {
                        "id": namespace_id(a, i),
                        "name": f"soak_Class{i}",
                        "class": f"Class{i}",
                        "script": "soak",
                        "use_sqlite": i % 2 == 0,
                        "objects": n,
                        "stored_data_ratio": 0.3,
                    }
                    for i, n in enumerate(SIZES[acc])
                ],
            }
            for a, acc in enumerate(ACCOUNTS)
        ],
        "faults": {"latency_ms": 3, "jitter_ms": 5, "rules": FAULT_RULES},
    }


def truth() -> dict[str, int]:
    return {
        namespace_id(a, i): n for a, acc in enumerate(ACCOUNTS) for i, n in enumerate(SIZES[acc])
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> tuple[float, int, int]:
    """RSS in MiB, threads and open file descriptors of a process."""
    rss_kib = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_kib / 1024, threads, fds


def slope_per_hour(times: list[float], values: list[float]) -> float:
    """Least-squares slope of values against time, per hour (0 for fewer than 2 points)."""
    if len(times) < 2:
        return 0.0
    mt, mv = statistics.fmean(times), statistics.fmean(values)
    den = sum((t - mt) ** 2 for t in times)
    if den == 0:
        return 0.0
    return sum((t - mt) * (v - mv) for t, v in zip(times, values, strict=True)) / den * 3600


@dataclass
class Series:
    name: str
    unit: str
    tolerance: float  # allowed growth from the warm start to the end (and max over start)
    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, t: float, v: float) -> None:
        self.times.append(t)
        self.values.append(v)

    def summary(self, warmup: float) -> dict[str, Any]:
        pairs = [(t, v) for t, v in zip(self.times, self.values, strict=True) if t >= warmup]
        if len(pairs) < 2:
            pairs = list(zip(self.times, self.values, strict=True))
        times, values = [p[0] for p in pairs], [p[1] for p in pairs]
        # Start and end are medians of a window, so one sample taken mid-poll does not decide.
        window = max(1, len(values) // 10)
        start = statistics.median(values[:window])
        end = statistics.median(values[-window:])
        growth = end - start
        peak = max(values)
        # Peaks (threads during a poll, RSS while a page is parsed) may come and go; what
        # must not happen is the peaks of the second half rising above those of the first.
        half = len(values) // 2
        peak_growth = max(values[half:]) - max(values[:half]) if half else 0.0
        ok = growth <= self.tolerance and peak_growth <= self.tolerance
        return {
            "measure": self.name,
            "unit": self.unit,
            "first": self.values[0] if self.values else None,
            "start": round(start, 2),
            "end": round(end, 2),
            "min": round(min(values), 2),
            "max": round(peak, 2),
            "growth": round(growth, 2),
            "peak_growth": round(peak_growth, 2),
            "slope_per_hour": round(slope_per_hour(times, values), 3),
            "tolerance": self.tolerance,
            "ok": ok,
        }


def scrape(url: str) -> tuple[str, float]:
    started = time.monotonic()
    with urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
    return text, time.monotonic() - started


def read_metrics(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def total(metrics: dict[str, dict[Any, float]], name: str, **match: str) -> float:
    return sum(
        v
        for labels, v in metrics.get(name, {}).items()
        if all(dict(labels).get(k) == want for k, want in match.items())
    )


def start_simulator(doc: dict[str, Any], workdir: str) -> tuple[subprocess.Popen[str], str]:
    path = os.path.join(workdir, "scenario.json")
    with open(path, "w") as handle:
        json.dump(doc, handle)
    proc = subprocess.Popen(
        [PYTHON, "-m", "do_exporter.simulator", "--scenario", path, "--listen", "127.0.0.1:0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"simulator did not start (exit {proc.wait(10)})")
    return proc, json.loads(line)["api_url"]


def stop(proc: subprocess.Popen[Any]) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="run time (default 30)")
    parser.add_argument("--interval", type=float, default=10.0, help="exporter poll interval")
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="sampling period")
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=None,
        help="samples before this are not judged (default: 3 minutes, or 20%% of a short run)",
    )
    parser.add_argument("--rss-tolerance-mib", type=float, default=8.0)
    parser.add_argument("--fd-tolerance", type=float, default=4.0)
    parser.add_argument("--thread-tolerance", type=float, default=4.0)
    parser.add_argument("--json", action="store_true", help="also print the summary as JSON")
    parser.add_argument("--log", help="keep the exporter's stderr (JSON logs) in this file")
    args = parser.parse_args(argv)
    duration = args.minutes * 60
    warmup = args.warmup_seconds if args.warmup_seconds is not None else min(180.0, duration * 0.2)

    workdir = tempfile.mkdtemp(prefix="do-soak-")
    log_path = args.log or os.path.join(workdir, "exporter.log")
    sim, api_url = start_simulator(scenario(), workdir)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDFLARE_", "DO_EXPORTER_"))}
    env["CLOUDFLARE_API_TOKEN"] = TOKEN
    command = [
        PYTHON, "-m", "do_exporter",
        "--api-url", api_url,
        "--account-id", ACCOUNTS[0], "--account-id", ACCOUNTS[1],
        "--interval", f"{args.interval:g}",
        "--web.listen-address", f"127.0.0.1:{port}",
        "--api-timeout", "3",
        "--api-rate-limit", "100000",
        "--log-format", "json",
    ]  # fmt: skip
    log_file = open(log_path, "w")  # noqa: SIM115 (closed in finally)
    exporter = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log_file, env=env
    )
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    expected = truth()
    rss = Series("rss", "MiB", args.rss_tolerance_mib)
    fds = Series("open_fds", "fds", args.fd_tolerance)
    threads = Series("threads", "threads", args.thread_tolerance)
    scrape_seconds: list[float] = []
    wrong: list[str] = []
    failed_scrapes = 0
    last: dict[str, dict[Any, float]] = {}
    died: int | None = None
    began = time.monotonic()
    print(
        f"soak: {args.minutes:g} min, interval {args.interval:g} s, sample every "
        f"{args.sample_seconds:g} s, exporter pid {exporter.pid}, log {log_path}",
        flush=True,
    )
    try:
        next_sample = began
        while time.monotonic() - began < duration:
            time.sleep(max(0.0, next_sample - time.monotonic()))
            next_sample += args.sample_seconds
            if exporter.poll() is not None:
                died = exporter.returncode
                break
            t = time.monotonic() - began
            try:
                r, th, fd = proc_status(exporter.pid)
            except (FileNotFoundError, ProcessLookupError):
                died = exporter.wait(10)
                break
            rss.add(t, r)
            threads.add(t, th)
            fds.add(t, fd)
            try:
                text, took = scrape(metrics_url)
            except (URLError, OSError):
                if t > 5:  # before that the server may still be starting
                    failed_scrapes += 1
                continue
            scrape_seconds.append(took)
            last = read_metrics(text)
            for labels, value in last.get(f"{PREFIX}_objects", {}).items():
                ns = dict(labels)["namespace_id"]
                if expected.get(ns) != value:
                    wrong.append(f"t={t:.0f}s {ns}={value} (truth {expected.get(ns)})")
            if int(t) % 60 < args.sample_seconds:
                polls = total(last, f"{PREFIX}_exporter_polls_total")
                errors = total(last, f"{PREFIX}_exporter_api_errors_total")
                print(
                    f"  t={t:5.0f}s rss={r:6.1f} MiB threads={th:3d} fds={fd:3d} "
                    f"polls={polls:.0f} api_errors={errors:.0f}",
                    flush=True,
                )
    finally:
        code = stop(exporter)
        log_file.close()
        stop(sim)
    if died is None and code not in (0, None):
        died = code

    summaries = [s.summary(warmup) for s in (rss, fds, threads)]
    requests = {
        dict(k)["code"]: v for k, v in last.get(f"{PREFIX}_exporter_api_requests_total", {}).items()
    }
    report = {
        "minutes": round((time.monotonic() - began) / 60, 2),
        "interval_seconds": args.interval,
        "samples": len(rss.values),
        "warmup_seconds": warmup,
        "measures": summaries,
        "polls": {
            result: total(last, f"{PREFIX}_exporter_polls_total", result=result)
            for result in ("success", "failure")
        },
        "api_requests_by_code": requests,
        "api_errors_total": total(last, f"{PREFIX}_exporter_api_errors_total"),
        "scrape_seconds": {
            "median": round(statistics.median(scrape_seconds), 4) if scrape_seconds else None,
            "max": round(max(scrape_seconds), 4) if scrape_seconds else None,
        },
        "failed_scrapes": failed_scrapes,
        "wrong_counts": len(wrong),
        "exporter_died": died,
        "exporter_exit_status": code,
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "cpu": next(
                (
                    line.split(":", 1)[1].strip()
                    for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")
                ),
                "",
            ),
        },
    }
    print(f"\nsoak summary ({report['minutes']} min, {report['samples']} samples, "
          f"judged after {warmup:g} s)")  # fmt: skip
    print(f"{'measure':10} {'first':>8} {'start':>8} {'end':>8} {'max':>8} "
          f"{'growth':>8} {'peak+':>7} {'slope/h':>9} {'tol':>5}  ok")  # fmt: skip
    for s in summaries:
        print(
            f"{s['measure']:10} {s['first']:8.1f} {s['start']:8.1f} {s['end']:8.1f} "
            f"{s['max']:8.1f} {s['growth']:8.2f} {s['peak_growth']:7.2f} "
            f"{s['slope_per_hour']:9.3f} {s['tolerance']:5g}  {'yes' if s['ok'] else 'NO'}"
        )
    print(f"polls: {report['polls']}; api errors: {report['api_errors_total']:.0f}; "
          f"requests by code: {requests}")  # fmt: skip
    print(f"scrapes: median {report['scrape_seconds']['median']} s, max "
          f"{report['scrape_seconds']['max']} s, failed {failed_scrapes}; "
          f"wrong counts served: {len(wrong)}; exporter exit status {code}")  # fmt: skip
    for line in wrong[:10]:
        print("  wrong:", line)
    if args.json:
        print(json.dumps(report))
    healthy = (
        all(s["ok"] for s in summaries)
        and not wrong
        and died is None
        and failed_scrapes == 0
        and report["polls"]["success"] > 0
    )
    print("soak:", "OK" if healthy else "FAILED")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
