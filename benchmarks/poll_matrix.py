"""Poll wall time against its lower bound, and requests against the minimum (parts 1 and 2).

Each cell starts the simulator as a separate process with a latency fault, builds the
exporter's polling stack the way ``do_exporter/app.py`` does (RateLimiter with the per-second
cap, a requests Session with a pool as large as the worker count, CloudflareClient, Poller)
and times ``poller.poll(previous)``, where ``previous`` comes from a priming poll (so the
poller knows the namespace sizes, as in every poll after the first). The priming poll, run
with an unlimited budget, is also reported as the "cold" time.

Bounds, with R requests, budget N per window W (r = N / W), per-request latency L and
chain = namespace-list pages + the longest cursor walk (pages that must be sequential):

- issue bound   = max(R / r, chain * L)                       (the issue's formula)
- window bound  = max(max_w (ceil(R / N_w) - 1) * W_w + L, chain * L)
  over the limiter's windows (N per W and the exporter's own 100 per second): the R-th
  request cannot be granted earlier, and then it takes L. A sliding window grants the
  first N at once, so this bound sits below R / r; a poll can beat the issue bound.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import requests
from _sim import SimProcess, list_pages, minimum_requests, object_pages, scenario
from requests.adapters import HTTPAdapter

from do_exporter.app import PER_SECOND_LIMIT
from do_exporter.cloudflare import CloudflareClient
from do_exporter.config import DEFAULT_CONCURRENCY, Secret
from do_exporter.model import Snapshot
from do_exporter.poller import Poller
from do_exporter.ratelimit import RateLimiter


@dataclass(frozen=True)
class Shape:
    name: str
    accounts: list[list[int]]  # object counts per namespace, per account

    @property
    def chain(self) -> int:
        return max(list_pages(len(c)) + max(object_pages(n) for n in c) for c in self.accounts)

    @property
    def requests(self) -> int:
        return minimum_requests(self.accounts)

    @property
    def objects(self) -> int:
        return sum(sum(c) for c in self.accounts)


def shapes(smoke: bool) -> list[Shape]:
    if smoke:
        return [
            Shape("few-large", [[30_000, 10_000]]),
            Shape("many-small", [[10] * 20]),
            Shape("mixed", [[20_000] + [10] * 10]),
        ]
    return [
        # 12 + 6 + 3 pages (120,000 is an exact multiple: no empty extra page allowed)
        Shape("few-large", [[120_000, 60_000, 25_000]]),
        Shape("many-small", [[200] * 150, [200] * 150]),  # two accounts, 300 one-page walks
        Shape("mixed", [[100_000] + [25_000] * 4 + [300] * 80]),
    ]


@dataclass(frozen=True)
class Budget:
    name: str
    requests: int
    window: float


def budgets(shape: Shape, smoke: bool) -> list[Budget]:
    """The default budget (never binds below 1,000 requests) and a scaled binding one.

    A binding budget with Cloudflare's real 300 s window makes a poll last at least 300 s, so
    the binding cells scale the window down (5 s, 1 s in the smoke run) and choose N so that
    the poll needs three windows' worth of grants.
    """
    window = 1.0 if smoke else 5.0
    return [
        Budget("1000/300s", 1000, 300.0),
        Budget(
            f"{math.ceil(shape.requests / 3)}/{window:g}s", math.ceil(shape.requests / 3), window
        ),
    ]


def build(
    api_url: str, token: str, account_ids: tuple[str, ...], budget: Budget
) -> tuple[Poller, requests.Session]:
    """The polling stack as ``do_exporter.app.Exporter`` wires it."""
    limiter = RateLimiter(budget.requests, budget.window, per_second=PER_SECOND_LIMIT)
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=DEFAULT_CONCURRENCY)
    session.mount("http://", adapter)
    client = CloudflareClient(session, api_url, Secret(token), limiter=limiter)
    # The interval equals the window here, so the poll's share of the budget is N.
    poller = Poller(
        client,
        account_ids=account_ids,
        max_workers=DEFAULT_CONCURRENCY,
        budget_per_poll=float(budget.requests),
        burst_rate=PER_SECOND_LIMIT,
    )
    return poller, session


def bounds(shape: Shape, budget: Budget, requests_made: int, latency: float) -> tuple[float, float]:
    chain = shape.chain * latency
    issue = max(requests_made / (budget.requests / budget.window), chain)
    windows = [(budget.requests, budget.window), (PER_SECOND_LIMIT, 1.0)]
    grant = max((math.ceil(requests_made / n) - 1) * w for n, w in windows)
    return issue, max(grant + latency, chain)


def check_counts(snapshot: Snapshot, shape: Shape, account_ids: tuple[str, ...]) -> bool:
    for acc_id, counts in zip(account_ids, shape.accounts, strict=True):
        account = snapshot.account(acc_id)
        if account is None or len(account.counts) != len(counts):
            return False
        if sorted(c.objects for c in account.counts.values()) != sorted(counts):
            return False
    return True


def run_cell(shape: Shape, latency_ms: float, budget: Budget, sim: SimProcess) -> dict[str, Any]:
    latency = latency_ms / 1000
    prime, prime_session = build(
        sim.api_url, sim.token, sim.account_ids, Budget("unlimited", 10**9, 300.0)
    )
    started = time.perf_counter()
    previous = prime.poll(Snapshot())
    cold = time.perf_counter() - started
    prime_session.close()

    poller, session = build(sim.api_url, sim.token, sim.account_ids, budget)
    sim.reset_stats()
    started = time.perf_counter()
    snapshot = poller.poll(previous)
    wall = time.perf_counter() - started
    session.close()
    stats = sim.stats()
    made = int(stats["requests_total"])
    issue, window = bounds(shape, budget, made, latency)
    return {
        "part": "poll",
        "scenario": shape.name,
        "latency_ms": latency_ms,
        "budget": budget.name,
        "binding": budget.window < 300,
        "namespaces": sum(len(c) for c in shape.accounts),
        "objects": shape.objects,
        "requests": made,
        "minimum": shape.requests,
        "minimal": made == shape.requests,
        "counts_ok": check_counts(snapshot, shape, sim.account_ids),
        "wall_s": wall,
        "cold_wall_s": cold,
        "issue_bound_s": issue,
        "window_bound_s": window,
        "ratio_issue": wall / issue,
        "ratio_window": wall / window,
    }


def run(smoke: bool = False, latencies: tuple[float, ...] | None = None) -> list[dict[str, Any]]:
    rows = []
    for shape in shapes(smoke):
        for latency_ms in latencies or ((20.0,) if smoke else (50.0, 500.0)):
            with SimProcess(scenario(shape.accounts, latency_ms=latency_ms)) as sim:
                for budget in budgets(shape, smoke):
                    rows.append(run_cell(shape, latency_ms, budget, sim))
    return rows
