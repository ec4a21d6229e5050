"""The usage query's cost with the busiest objects, percentiles and statuses (issue 18).

    python benchmarks/analytics_cost.py [--namespaces 500] [--top 100] [--runs 5] [--json FILE]

Against the simulator in a child process (``python -m do_exporter.simulator``), one account
of ``--namespaces`` namespaces, the default 5-minute window:

- ``answer_kb``: the size of the first (and only) page of the usage query, as served, with
  the top-N aliases (``--top``), with them off (``top 0``), and in round 2's shape (no
  statuses, no percentiles) for comparison;
- ``decode_ms``: ``json.loads`` of that answer; ``parse_ms``: :func:`parse_analytics` of the
  decoded document; ``families_ms``: counting it (:func:`advance`) and building the families
  (medians of ``--runs x 10``, in this process);
- ``requests``: GraphQL requests of three polls of a real :class:`Poller`: the first reads
  the plan's limits too (``settings``), the next ones are the steady state.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from _sim import SimProcess, machine, scenario  # noqa: E402

from do_exporter import analytics  # noqa: E402
from do_exporter.cloudflare import CloudflareClient, Secret  # noqa: E402
from do_exporter.logs import configure  # noqa: E402
from do_exporter.metrics.groups import GROUPS  # noqa: E402
from do_exporter.model import Namespace, Snapshot  # noqa: E402
from do_exporter.planner import AnalyticsPlan  # noqa: E402
from do_exporter.poller import Poller  # noqa: E402
from do_exporter.ratelimit import RateLimiter  # noqa: E402


def _median_ms(fn: Any, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def measure_answer(
    sim: SimProcess, top: int, runs: int, groups: tuple[str, ...] = GROUPS
) -> dict[str, Any]:
    acc = sim.account_ids[0]
    end = analytics.floor_minute(time.time() - 300)
    window = analytics.Window(end - 300, end)
    body = analytics.build_request(acc, window, top_objects=top, groups=groups)
    response = requests.post(
        sim.api_url + "/graphql",
        json=body,
        headers={"Authorization": f"Bearer {sim.token}"},
        timeout=300,
    )
    raw = response.content
    doc = json.loads(raw)
    usage = analytics.parse_analytics(doc, require=["hotRequests", "hotCpu"] if top else [])
    if not isinstance(usage, analytics.AccountUsage) or usage.next_after is not None:
        raise RuntimeError(f"the answer did not parse as one page: {usage}")
    names = {acc: [Namespace(n, f"ns{i}") for i, n in enumerate(usage.usage)]}

    def count_and_build() -> None:
        state = analytics.advance(analytics.AnalyticsState(acc), window, usage, now=0.0)
        analytics.families([state], names)

    return {
        "top": top,
        "shape": "all groups" if groups == GROUPS else "round 2 (no status, no percentiles)",
        "answer_kb": round(len(raw) / 1024, 1),
        "hot_series": len(usage.hot_requests or ()) + len(usage.hot_cpu or ()),
        "decode_ms": round(_median_ms(lambda: json.loads(raw), runs), 2),
        "parse_ms": round(_median_ms(lambda: analytics.parse_analytics(doc), runs), 2),
        "families_ms": round(_median_ms(count_and_build, runs), 2),
    }


def measure_requests(sim: SimProcess, top: int) -> list[int]:
    client = CloudflareClient(
        requests.Session(), sim.api_url, Secret(sim.token), limiter=RateLimiter(10**9)
    )
    plan = AnalyticsPlan(delay=300.0, interval=300.0, top_objects=top)
    now = [time.time()]
    poller = Poller(client, account_ids=sim.account_ids, analytics=plan, clock=lambda: now[0])
    counts = []
    snap = Snapshot()
    for _ in range(3):
        before = sum(sim.stats()["requests"].get("graphql", {}).values())
        snap = poller.poll(snap)
        counts.append(sum(sim.stats()["requests"].get("graphql", {}).values()) - before)
        now[0] += 60  # the next poll a minute later: one new closed minute
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespaces", type=int, default=500)
    parser.add_argument("--top", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    configure(level="error", fmt="json")
    doc = scenario([[1000] * args.namespaces])
    for account in doc["accounts"]:
        for ns in account["namespaces"]:
            ns["analytics"] = {"requests_per_minute": 600, "hot_objects": 6}
    rows = []
    with SimProcess(doc) as sim:
        for top in (args.top, 0):
            rows.append(measure_answer(sim, top, args.runs * 10))
        rows.append(measure_answer(sim, 0, args.runs * 10, groups=()))
        polls = measure_requests(sim, args.top)
    result = {
        "machine": machine(),
        "namespaces": args.namespaces,
        "answers": rows,
        "graphql_requests_per_poll": polls,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
