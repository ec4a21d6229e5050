"""Round-2 figures: poll memory, planning time, limiter wake-ups, workers, analytics cost.

    python benchmarks/round2.py [--smoke] [--runs N] [--json FILE]

- ``memory``: one poll in a fresh process (``poll_worker.py``) against the simulator in
  another, no latency: 10 million objects in one namespace, and in 1,000 namespaces of
  10,000. Peak RSS is ``VmHWM`` of the poll's process; also the walk workers it then uses.
- ``planning``: the planner's work for one poll, called as a poll calls it (``poll_start``,
  ``CountPlan``, ``counts_due`` and every order, ``publish``), 5,000 / 10,000 / 20,000
  accounts x 2 namespaces, configured and discovered (``planning.py``), median of runs.
- ``limiter``: 64 threads taking 600 grants through a limiter of 100 a second; how many
  times the limiter looked at its windows per grant (the head of the queue only).
- ``analytics``: decoding a 500-namespace GraphQL answer, counting it and rendering its
  families (median), and GraphQL requests per poll against the simulator (one per account).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import planning  # noqa: E402
from _sim import PYTHON, SimProcess, account_id, scenario  # noqa: E402

from do_exporter import analytics  # noqa: E402
from do_exporter.logs import configure  # noqa: E402
from do_exporter.metrics.snapshot import render  # noqa: E402
from do_exporter.model import AccountSnapshot, Namespace, Snapshot  # noqa: E402
from do_exporter.ratelimit import Lane, RateLimiter  # noqa: E402

WORKER = str(HERE / "poll_worker.py")


def run_memory(smoke: bool) -> list[dict[str, Any]]:
    total = 200_000 if smoke else 10_000_000
    cases = {"1 namespace": [[total]], "1,000 namespaces": [[total // 1000] * 1000]}
    rows = []
    for name, accounts in cases.items():
        with SimProcess(scenario(accounts)) as sim:
            out = subprocess.run(
                [PYTHON, WORKER, sim.api_url, sim.token, ",".join(sim.account_ids)],
                capture_output=True,
                text=True,
                check=True,
                timeout=1800,
            )
            result: dict[str, Any] = json.loads(out.stdout)
        if result["objects"] != total:
            raise RuntimeError(f"{name}: counted {result['objects']} of {total}")
        rows.append({"part": "memory", "case": name, "objects": total, **result})
    return rows


def run_planning(smoke: bool, runs: int) -> list[dict[str, Any]]:
    """The planner called the way a poll calls it (``planning.py``, which also runs alone)."""
    return [{"part": "planning", **row} for row in planning.run(smoke, runs)]


class _CountingLimiter(RateLimiter):
    def __init__(self) -> None:
        super().__init__(10**9, 300.0, per_second=100)
        self.checks = 0

    def _delay(self, now: float, lane: Lane) -> float:
        self.checks += 1
        return super()._delay(now, lane)


def run_limiter(smoke: bool) -> list[dict[str, Any]]:
    grants = 150 if smoke else 600
    limiter = _CountingLimiter()
    left = [grants]
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            limiter.acquire()

    threads = [threading.Thread(target=worker) for _ in range(64)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return [
        {
            "part": "limiter",
            "threads": 64,
            "grants": grants,
            "wall_s": wall,
            "checks_per_grant": limiter.checks / grants,
        }
    ]


def usage_answer(namespaces: int) -> bytes:
    ids = [f"{i:032x}" for i in range(namespaces)]
    inv = [
        {"dimensions": {"namespaceId": n}, "sum": {"requests": 1000 + i, "errors": i % 7,
         "wallTime": 5_000_000, "responseBodySize": 123_456}}
        for i, n in enumerate(ids)
    ]  # fmt: skip
    periodic = [
        {"dimensions": {"namespaceId": n},
         "sum": {"cpuTime": 2_000_000, "activeTime": 9_000_000, "duration": 1.5,
                 "rowsRead": 10_000, "rowsWritten": 500, "storageReadUnits": 3,
                 "storageWriteUnits": 2, "storageDeletes": 1, "inboundWebsocketMsgCount": 40,
                 "outboundWebsocketMsgCount": 60, "subrequests": 9, "exceededCpuErrors": 0,
                 "exceededMemoryErrors": 0, "fatalInternalErrors": 0},
         "max": {"activeWebsocketConnections": 12}}
        for n in ids
    ]  # fmt: skip
    sql = [{"dimensions": {"namespaceId": n}, "max": {"storedBytes": 1 << 20}} for n in ids]
    account = {
        "invocations": inv,
        "periodic": periodic,
        "sqlStorage": sql,
        "storage": [{"max": {"storedBytes": 500 << 20}}],
    }
    return json.dumps({"data": {"viewer": {"accounts": [account]}}, "errors": None}).encode()


def run_analytics(smoke: bool, runs: int) -> list[dict[str, Any]]:
    body = usage_answer(500)
    acc = account_id(0)
    namespaces = {acc: [Namespace(f"{i:032x}", f"ns{i}") for i in range(500)]}
    window = analytics.Window(1_900_000_000, 1_900_000_300)
    times = []
    for _ in range(runs * 10):
        started = time.perf_counter()
        usage = analytics.parse_analytics(body)
        if not isinstance(usage, analytics.AccountUsage):
            raise RuntimeError(f"the canned answer did not parse: {usage}")
        state = analytics.advance(analytics.AnalyticsState(acc), window, usage, now=0.0)
        snap = Snapshot(
            accounts=(AccountSnapshot(acc, tuple(namespaces[acc]), namespaces_listed=True),),
            analytics=MappingProxyType({acc: state}),
        )
        render(snap)
        times.append(time.perf_counter() - started)
    with SimProcess(scenario([[10, 20], [30], [40]])) as sim:
        out = subprocess.run(
            [PYTHON, WORKER, sim.api_url, sim.token, ",".join(sim.account_ids), "--analytics"],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        result = json.loads(out.stdout)
        graphql = sum(sim.stats()["requests"].get("graphql", {}).values())
    return [
        {
            "part": "analytics",
            "namespaces": 500,
            "answer_kb": len(body) / 1024,
            "decode_count_render_ms": statistics.median(times) * 1000,
            "accounts": len(sim.account_ids),
            "graphql_requests_per_poll": graphql,
            "analytics_accounts": result["analytics_accounts"],
        }
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--only", action="append", choices=("memory", "planning", "limiter", "analytics")
    )
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    configure(level="error", fmt="json")
    parts = args.only or ["memory", "planning", "limiter", "analytics"]
    rows: list[dict[str, Any]] = []
    for part in parts:
        if part == "memory":
            rows += run_memory(args.smoke)
        elif part == "planning":
            rows += run_planning(args.smoke, args.runs)
        elif part == "limiter":
            rows += run_limiter(args.smoke)
        else:
            rows += run_analytics(args.smoke, args.runs)
    for row in rows:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
