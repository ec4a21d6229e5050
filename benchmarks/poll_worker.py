"""One poll in a fresh process, wired as ``do_exporter.app.Exporter`` wires it; prints JSON.

    python benchmarks/poll_worker.py API_URL TOKEN ACCOUNT_ID[,ACCOUNT_ID...] [--analytics]

Reports the process's peak RSS (``VmHWM``, this process image only), RSS after imports,
wall time, requests made, the walk workers the poller chose afterwards, and the totals
counted, so the caller can check them against the scenario.
"""

from __future__ import annotations

import json
import sys
import time

from count_worker import rss_kb, status_kb

rss_before = rss_kb()

import requests  # noqa: E402
from requests.adapters import HTTPAdapter  # noqa: E402

from do_exporter.app import PER_SECOND_LIMIT  # noqa: E402
from do_exporter.cloudflare import CloudflareClient  # noqa: E402
from do_exporter.config import DEFAULT_CONCURRENCY, DEFAULT_RATE_LIMIT, Secret  # noqa: E402
from do_exporter.logs import configure  # noqa: E402
from do_exporter.model import Snapshot  # noqa: E402
from do_exporter.planner import AnalyticsPlan, Credential  # noqa: E402
from do_exporter.poller import Poller, Source  # noqa: E402
from do_exporter.ratelimit import RateLimiter  # noqa: E402


def main() -> None:
    api_url, token, accounts = sys.argv[1], sys.argv[2], tuple(sys.argv[3].split(","))
    analytics = "--analytics" in sys.argv
    configure(level="error", fmt="json")  # log lines go to stderr; stdout is the result
    limiter = RateLimiter(10**9, 300.0, per_second=PER_SECOND_LIMIT)
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=DEFAULT_CONCURRENCY)
    session.mount("http://", adapter)
    client = CloudflareClient(session, api_url, Secret(token), limiter=limiter)
    credential = Credential("default", accounts, DEFAULT_RATE_LIMIT * 1000, window_polls=1.0)
    poller = Poller(
        sources=[Source(credential, client, limiter)],
        max_workers=DEFAULT_CONCURRENCY,
        burst_rate=PER_SECOND_LIMIT,
        analytics=AnalyticsPlan(delay=300.0, interval=300.0) if analytics else None,
    )
    started = time.perf_counter()
    snap = poller.poll(Snapshot())
    wall = time.perf_counter() - started
    print(
        json.dumps(
            {
                "rss_before_mb": rss_before / 1024,
                "peak_rss_mb": status_kb("VmHWM") / 1024,
                "wall_s": wall,
                "requests": client.requests_made,
                "workers_after": poller.workers(),
                "latency_head_ms": (client.latency or 0.0) * 1000,
                "objects": sum(c.objects for a in snap.accounts for c in a.counts.values()),
                "namespaces": sum(len(a.counts) for a in snap.accounts),
                "analytics_accounts": len(snap.analytics),
            }
        )
    )


if __name__ == "__main__":
    main()
