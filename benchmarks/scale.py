"""Scale figures (issue 17): memory at the largest shapes, rendering, scrapes while polling.

Every part runs the code the way the daemon does: the simulator (``_sim.py``) in its own
process, real polls through ``do_exporter.app.Exporter`` or ``python -m do_exporter --once``,
real scrapes of ``MetricsServer`` from other processes. Run it against another tree (today's
main) with ``PYTHONPATH=/other/tree python benchmarks/scale.py ...``: it only uses
``Exporter`` (built from a ``config.Credential``), ``SnapshotStore.publish`` and
``Exporter.exposition_parts``. (The figures in docs/benchmarks.md compare with main at
``96bf873``, when ``Exporter`` still took an ``app.Target``.)

    python benchmarks/scale.py once [--accounts 10 --namespaces 500 --objects 2000] [--no-analytics]
    python benchmarks/scale.py daemon [--accounts 20 --namespaces 500 --polls 30 --steady --trace]
    python benchmarks/scale.py render [--accounts 20 --namespaces 500]
    python benchmarks/scale.py scrape [--accounts 20 --namespaces 500 --scrapers 20]
    python benchmarks/scale.py plain --scrapers 4 --scrapes 5   (plain-text scrapes: peak RSS)

Each prints one JSON line. Peak RSS is ``/usr/bin/time``'s maximum resident set (``once``)
or ``VmHWM``/``VmRSS`` of the worker process itself (the simulator is another process).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from _sim import PYTHON, SimProcess, scenario
from scrape import PollLoop, big_snapshot, percentile

import do_exporter
from do_exporter import analytics
from do_exporter.app import Exporter
from do_exporter.config import MAX_RATE_LIMIT, Config, Credential, Secret
from do_exporter.logs import configure
from do_exporter.model import Snapshot
from do_exporter.server import MetricsServer

CLIENT = str(Path(__file__).resolve().parent / "scrape_client.py")
TREE = Path(do_exporter.__file__).resolve().parent.parent  # the code measured (PYTHONPATH)


def status_kb(field: str) -> int:
    """A ``/proc/self/status`` field (``VmRSS``, ``VmHWM``) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _exporter(config: Config, api_url: str, token: str, accounts: tuple[str, ...]) -> Exporter:
    credential = Credential("default", accounts, token=Secret(token),
                            api_rate_limit=MAX_RATE_LIMIT, api_url=api_url)  # fmt: skip
    return Exporter(config, credential)


def _sim_doc(accounts: int, namespaces: int, objects: int, steady: bool = False) -> dict[str, Any]:
    doc = scenario([[objects] * namespaces for _ in range(accounts)])
    doc["tokens"] = [{"value": "scale-benchmark-token-0123456789abcdef0123"}]  # 40: the CLI checks
    if steady:  # every status in every window: no series appears after the first poll
        for account in doc["accounts"]:
            for ns in account["namespaces"]:
                ns["analytics"] = {"error_rate": 0.05, "client_disconnect_rate": 0.05}
    return doc


def run_once(args: argparse.Namespace) -> dict[str, Any]:
    """``--once`` against the simulator: peak RSS of the exporter process, and its time."""
    with SimProcess(_sim_doc(args.accounts, args.namespaces, args.objects)) as sim:
        cmd = ["/usr/bin/time", "-f", "%M %e %U %S", PYTHON, "-m", "do_exporter", "--once",
               "--api-url", sim.api_url, "--log-level", "error",
               "--api-rate-limit", str(MAX_RATE_LIMIT),
               "--analytics" if args.analytics else "--no-analytics"]  # fmt: skip
        for account in sim.account_ids:
            cmd += ["--account-id", account]
        env = {**os.environ, "CLOUDFLARE_API_TOKEN": sim.token}
        out = subprocess.run(cmd, capture_output=True, env=env, timeout=3600, cwd=TREE)
        peak_kb, wall, user, system = out.stderr.decode().strip().splitlines()[-1].split()
        body = out.stdout
    return {
        "part": "once",
        "accounts": args.accounts,
        "namespaces": args.accounts * args.namespaces,
        "objects": args.accounts * args.namespaces * args.objects,
        "analytics": args.analytics,
        "exit": out.returncode,
        "peak_rss_mb": int(peak_kb) / 1024,
        "wall_s": float(wall),
        "cpu_s": float(user) + float(system),
        "exposition_bytes": len(body),
        "series": body.count(b"\n") - body.count(b"\n#") - body.startswith(b"#"),
    }


def _with_usage(snapshot: Snapshot, tick: int) -> Snapshot:
    """The snapshot with every namespace's usage counters grown by one window (a poll)."""
    states = {}
    for account in snapshot.accounts:
        sums = {
            ns.id: analytics.NamespaceUsage(
                requests=1000 * tick + i, errors=tick, cpu_time_us=10_000 * tick + i,
                wall_time_us=50_000 * tick, duration_gb_s=0.5 * tick, rows_read=7 * tick,
                websocket_inbound=3 * tick,
            )
            for i, ns in enumerate(account.namespaces)
        }  # fmt: skip
        ids = list(sums)
        states[account.account_id] = analytics.AnalyticsState(
            account.account_id, watermark=1_900_000_000 + 300 * tick, first_start=1_900_000_000,
            counters=MappingProxyType(sums), websockets=MappingProxyType(dict.fromkeys(ids, 4)),
            stored_bytes=MappingProxyType(dict.fromkeys(ids, 1 << 20)), account_stored_bytes=1,
            last_success_at=1_900_000_000.0 + 300 * tick,
        )  # fmt: skip
    return replace(snapshot, analytics=MappingProxyType(states))


def run_render(args: argparse.Namespace) -> dict[str, Any]:
    """CPU of publishing (rendering) a snapshot: first, then polls whose usage all changed,
    then one where nothing changed; what is held; peak RSS."""
    base = big_snapshot(args.accounts, args.namespaces)
    exporter = _exporter(Config(), "http://127.0.0.1:9", "x" * 40, ())
    rss_before = status_kb("VmRSS")
    timings: dict[str, list[float]] = {"first": [], "changed": [], "unchanged": []}
    snapshot = base
    for tick in range(1 + args.polls):
        snapshot = _with_usage(base, tick)
        started = time.process_time()
        exporter.store.publish(snapshot)
        timings["first" if tick == 0 else "changed"].append(time.process_time() - started)
    for _ in range(args.polls):
        started = time.process_time()
        exporter.store.publish(snapshot)
        timings["unchanged"].append(time.process_time() - started)
    peak = status_kb("VmHWM")  # before the checks below build the whole text
    held = sum(len(p) for p in exporter.exposition_parts(True))
    text = exporter.exposition(False)
    assert gzip.decompress(exporter.exposition(True)) == text
    return {
        "part": "render",
        "namespaces": args.accounts * args.namespaces,
        "series": text.count(b"\n") - text.count(b"\n#") - 1,
        "plain_bytes": len(text),
        "held_gzip_bytes": held,
        **{f"{k}_cpu_ms": round(statistics.median(v) * 1000, 1) for k, v in timings.items()},
        "rss_before_mb": rss_before / 1024,
        "peak_rss_mb": peak / 1024,
    }


def run_daemon(args: argparse.Namespace) -> dict[str, Any]:
    """Real polls (walks and analytics queries against the simulator) published one after
    the other, as the daemon's schedule does; RSS after each."""
    with SimProcess(_sim_doc(args.accounts, args.namespaces, args.objects, args.steady)) as sim:
        config = Config(analytics=args.analytics)
        exporter = _exporter(config, sim.api_url, sim.token, sim.account_ids)
        rss: list[float] = []
        walls: list[float] = []
        lines: list[int] = []
        traced: list[float] = []
        snapshots: dict[int, tracemalloc.Snapshot] = {}
        if args.trace:
            tracemalloc.start(12)
        for _ in range(args.polls):
            started = time.perf_counter()
            exporter.poll_once()
            walls.append(time.perf_counter() - started)
            rss.append(status_kb("VmRSS") / 1024)
            # Lines of the exposition (counted a piece at a time, after the RSS is read): new
            # series appear while polls go on, as namespaces first report a rarer status.
            lines.append(sum(part.count(b"\n") for part in exporter.exposition_parts(False)))
            if args.trace:  # Python's own memory: what grows is named at the end
                traced.append(round(tracemalloc.get_traced_memory()[0] / 2**20, 2))
                if len(rss) in (3, args.polls):
                    snapshots[len(rss)] = tracemalloc.take_snapshot()
            print(json.dumps({"poll": len(rss), "wall_s": round(walls[-1], 1),
                              "rss_mb": round(rss[-1], 1), "peak_mb": status_kb("VmHWM") // 1024,
                              "lines": lines[-1], "load": os.getloadavg()[0]}),
                  file=sys.stderr, flush=True)  # fmt: skip  (progress of a long run)
        peak = status_kb("VmHWM")
        exporter.session.close()
    if len(snapshots) == 2:
        for stat in snapshots[args.polls].compare_to(snapshots[3], "traceback")[:6]:
            print(stat, *stat.traceback.format()[-6:], sep="\n    ", file=sys.stderr)
    return {
        "part": "daemon",
        "namespaces": args.accounts * args.namespaces,
        "analytics": args.analytics,
        "polls": args.polls,
        "exposition_lines_after_poll": lines,
        "traced_mb_after_poll": traced,
        "poll_wall_s_median": statistics.median(walls),
        "rss_mb_after_poll": [round(r, 1) for r in rss],
        "rss_growth_after_third_mb": round(max(rss[2:]) - rss[2], 1) if len(rss) > 2 else None,
        "peak_rss_mb": peak / 1024,
    }


class _Publisher(PollLoop):
    """The poll loop, plus publishing the big snapshot with fresh usage after each poll."""

    def __init__(self, exporter: Exporter, base: Snapshot) -> None:
        super().__init__(exporter)
        self._base = base

    def _run(self) -> None:
        previous, tick = Snapshot(), 1
        while not self._stop.is_set():
            previous = self._exporter.poller.poll(previous)
            self._exporter.store.publish(_with_usage(self._base, tick))
            self.polls, tick = self.polls + 1, tick + 1


def _scrapers(port: int, count: int, clients: int, encoding: str = "gzip") -> list[float]:
    procs = [
        subprocess.Popen(
            [PYTHON, CLIENT, f"http://127.0.0.1:{port}/metrics", str(count), encoding],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    latencies: list[float] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        latencies += json.loads(out)["latencies_ms"]
    return latencies


def run_scrape(args: argparse.Namespace) -> dict[str, Any]:
    """``scrapers`` concurrent gzip scrapers while polls run and publish; CPU per scrape is
    the exporter process's CPU over idle scrapes (no poll) divided by their number."""
    base = big_snapshot(args.accounts, args.namespaces)
    with SimProcess(scenario([[100_000] * 2 + [1_000] * 100])) as sim:
        exporter = _exporter(Config(), sim.api_url, sim.token, sim.account_ids)
        exporter.store.publish(_with_usage(base, 0))
        server = MetricsServer("127.0.0.1", 0, metrics=exporter.exposition_parts,
                               ready=exporter.ready)  # fmt: skip
        server.start()
        try:
            _scrapers(server.port, 2, 2)  # warm-up
            cpu = time.process_time()
            idle = _scrapers(server.port, args.scrapes, args.scrapers)
            cpu_per_scrape = (time.process_time() - cpu) / len(idle)
            loop = _Publisher(exporter, base)
            with loop:
                while loop.polls == 0 and not loop._stop.is_set():
                    time.sleep(0.05)
                busy = _scrapers(server.port, args.scrapes, args.scrapers)
            polls = loop.polls
        finally:
            server.stop()
            exporter.session.close()
    return {
        "part": "scrape",
        "namespaces": args.accounts * args.namespaces,
        "scrapers": args.scrapers,
        "scrapes": len(busy),
        "cpu_ms_per_scrape_idle": round(cpu_per_scrape * 1000, 2),
        "p50_ms_idle": round(statistics.median(idle), 1),
        "p99_ms_idle": round(percentile(idle, 0.99), 1),
        "p50_ms_polling": round(statistics.median(busy), 1),
        "p99_ms_polling": round(percentile(busy, 0.99), 1),
        "polls_during": polls,
    }


def run_plain(args: argparse.Namespace) -> dict[str, Any]:
    """Plain-text scrapes (no gzip asked) of the big snapshot: what they add to the peak RSS
    (``VmHWM``) of the exporter process, and their CPU and latency. The snapshot is held as
    gzip members; the text is inflated while it is sent."""
    exporter = _exporter(Config(), "http://127.0.0.1:9", "x" * 40, ())
    exporter.store.publish(_with_usage(big_snapshot(args.accounts, args.namespaces), 0))
    server = MetricsServer("127.0.0.1", 0, metrics=exporter.exposition_parts,
                           ready=exporter.ready)  # fmt: skip
    server.start()
    try:
        rss_before, peak_before = status_kb("VmRSS"), status_kb("VmHWM")
        cpu = time.process_time()
        latencies = _scrapers(server.port, args.scrapes, args.scrapers, "identity")
        cpu_per_scrape = (time.process_time() - cpu) / len(latencies)
        peak_after = status_kb("VmHWM")
    finally:
        server.stop()
    return {
        "part": "plain",
        "namespaces": args.accounts * args.namespaces,
        "plain_bytes": exporter.store.rendered.plain_length,
        "scrapers": args.scrapers,
        "scrapes": len(latencies),
        "rss_before_mb": round(rss_before / 1024, 1),
        "peak_before_mb": round(peak_before / 1024, 1),
        "peak_after_mb": round(peak_after / 1024, 1),
        "cpu_ms_per_scrape": round(cpu_per_scrape * 1000, 1),
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("once", "daemon", "render", "scrape", "plain"))
    p.add_argument("--accounts", type=int)
    p.add_argument("--namespaces", type=int, default=500)
    p.add_argument("--objects", type=int, default=2000)
    p.add_argument("--analytics", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--polls", type=int, default=30)
    p.add_argument("--scrapers", type=int, default=20)
    p.add_argument("--scrapes", type=int, default=10, help="per scraper")
    p.add_argument("--trace", action="store_true",
                   help="daemon: Python's own memory after each poll (tracemalloc; slower), "
                   "and what grew from the third poll to the last")  # fmt: skip
    p.add_argument("--steady", action="store_true",
                   help="daemon: every namespace reports every status from the first window "
                   "(5%% errors, 5%% disconnects), so the series count does not grow")  # fmt: skip
    args = p.parse_args()
    if args.accounts is None:
        args.accounts = 10 if args.part == "once" else 20
    if args.part == "daemon" and "--objects" not in sys.argv:
        args.objects = 100
    run = {"once": run_once, "daemon": run_daemon, "render": run_render, "scrape": run_scrape,
           "plain": run_plain}  # fmt: skip
    configure(level="error", fmt="json")  # log lines go to stderr; stdout is the result
    load = os.getloadavg()
    result = run[args.part](args)
    result["load_at_start"] = load
    result["tree"] = str(TREE)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
