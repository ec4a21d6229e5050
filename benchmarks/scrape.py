"""Scrape latency of ``/metrics`` for a large snapshot while a poll runs (part 5).

A snapshot of 10,000 namespaces (20 accounts of 500: about 40,000 series) is built from
``do_exporter.model`` types and published into the exporter's ``SnapshotStore`` (through
``do_exporter.app.Exporter``, so ``/metrics`` is composed exactly as in the daemon: the
pre-rendered snapshot plus ``generate_latest`` of the exporter's own metrics). It is served
by ``MetricsServer`` and scraped by ``scrape_client.py`` in another process, with and
without ``Accept-Encoding: gzip``, twice: idle, and while a poll loop runs in another thread
of this process (real polls of a 1-million-object account against the simulator, in a
third process, with no latency and an unlimited budget: the busiest poll there can be).
The same is measured with the exposition rendered on every scrape
(``do_exporter.metrics.snapshot.render``), the design this replaces.
"""

from __future__ import annotations

import gzip
import json
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _sim import PYTHON, SimProcess, scenario
from prometheus_client.exposition import generate_latest

from do_exporter.app import Exporter
from do_exporter.config import MAX_RATE_LIMIT, Config, Credential, Secret
from do_exporter.metrics.snapshot import render
from do_exporter.model import AccountSnapshot, Namespace, NamespaceCount, Snapshot
from do_exporter.server import Body, MetricsServer

CLIENT = str(Path(__file__).resolve().parent / "scrape_client.py")


def big_snapshot(accounts: int, per_account: int) -> Snapshot:
    now = time.time()
    result = []
    for a in range(accounts):
        acc = f"{a + 1:032x}"
        namespaces = tuple(
            Namespace(
                id=f"{a:08x}{i:024x}",
                name=f"worker-{a}_Class{i}",
                class_name=f"Class{i}",
                script=f"worker-{a}",
                use_sqlite=i % 2 == 0,
            )
            for i in range(per_account)
        )
        counts = {
            ns.id: NamespaceCount(
                objects=1000 + i * 37, with_stored_data=400 + i, completed_at=now - i,
                refresh_seconds=300.0,
            )
            for i, ns in enumerate(namespaces)
        }  # fmt: skip
        result.append(
            AccountSnapshot(
                account_id=acc,
                namespaces=namespaces,
                counts=counts,
                last_poll_success=True,
                last_success_at=now,
                last_poll_duration=12.5,
                polls_success=3,
                namespaces_listed=True,
            )
        )
    return Snapshot(accounts=tuple(result), generation=1, complete=True)


def scrape(port: int, count: int, gzipped: bool) -> dict[str, Any]:
    args = [PYTHON, CLIENT, f"http://127.0.0.1:{port}/metrics", str(count)]
    if gzipped:
        args.append("gzip")
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=600)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class PollLoop:
    """Polls the simulator again and again in a background thread (the CPU-busy load)."""

    def __init__(self, exporter: Exporter) -> None:
        self._exporter = exporter
        self._stop = threading.Event()
        self.polls = 0
        self._thread = threading.Thread(target=self._run, name="bench-poll-loop", daemon=True)

    def _run(self) -> None:
        previous = Snapshot()
        while not self._stop.is_set():
            previous = self._exporter.poller.poll(previous)
            self.polls += 1

    def __enter__(self) -> PollLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)


def run(smoke: bool = False) -> list[dict[str, Any]]:
    accounts, per_account = (2, 100) if smoke else (20, 500)
    scrapes, render_scrapes = (20, 5) if smoke else (300, 40)
    load_objects = [[20_000] + [100] * 20] if smoke else [[400_000] * 2 + [1_000] * 200]
    snapshot = big_snapshot(accounts, per_account)
    rows: list[dict[str, Any]] = []
    with SimProcess(scenario(load_objects)) as sim:
        config = Config()
        credential = Credential(
            "default",
            sim.account_ids,
            token=Secret(sim.token),
            api_rate_limit=MAX_RATE_LIMIT,
            api_url=sim.api_url,
        )
        exporter = Exporter(config, credential)
        started = time.perf_counter()
        exporter.store.publish(snapshot)
        publish_s = time.perf_counter() - started
        series = exporter.store.exposition.count(b"\n") - exporter.store.exposition.count(b"\n#")

        def per_scrape(compressed: bool) -> bytes:
            text = render(exporter.store.snapshot) + generate_latest(exporter.metrics)
            return gzip.compress(text, compresslevel=6, mtime=0) if compressed else text

        servers: dict[str, Callable[[bool], Body]] = {
            "pre-rendered": exporter.exposition_parts,
            "render per scrape": per_scrape,
        }
        for mode, metrics in servers.items():
            server = MetricsServer("127.0.0.1", 0, metrics=metrics, ready=exporter.ready)
            server.start()
            n = scrapes if mode == "pre-rendered" else render_scrapes
            try:
                for load in ("idle", "polling"):
                    for gzipped in (False, True):
                        scrape(server.port, 3, gzipped)  # warm-up (and imports)
                        if load == "polling":
                            with PollLoop(exporter) as loop:
                                time.sleep(0.3)
                                result = scrape(server.port, n, gzipped)
                            polls = loop.polls
                        else:
                            result = scrape(server.port, n, gzipped)
                            polls = 0
                        lat = result["latencies_ms"]
                        rows.append(
                            {
                                "part": "scrape",
                                "mode": mode,
                                "load": load,
                                "encoding": "gzip" if gzipped else "identity",
                                "namespaces": accounts * per_account,
                                "series": series,
                                "bytes": result["bytes"],
                                "scrapes": n,
                                "p50_ms": statistics.median(lat),
                                "p99_ms": percentile(lat, 0.99),
                                "max_ms": max(lat),
                                "polls_during": polls,
                                "publish_s": publish_s,
                            }
                        )
            finally:
                server.stop()
        exporter.session.close()
    by_key = {(r["mode"], r["load"], r["encoding"]): r for r in rows}
    for r in rows:
        if r["mode"] == "render per scrape":
            fast = by_key[("pre-rendered", r["load"], r["encoding"])]
            r["p50_ratio_vs_prerendered"] = r["p50_ms"] / fast["p50_ms"]
    return rows
