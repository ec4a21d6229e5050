"""Budget-aware ordering of counts and the full-refresh figure (pure, no HTTP)."""

from __future__ import annotations

import time
from types import MappingProxyType

from do_exporter.model import (
    AccountPoll,
    AccountSnapshot,
    Namespace,
    NamespaceCount,
    ObjectCount,
    Snapshot,
    next_account,
)
from do_exporter.poller import _AccountWork, _full_refresh, _Plan, estimated_pages

A = "a" * 32


def previous(sizes: dict[str, int], completed: dict[str, float] | None = None) -> Snapshot:
    completed = completed or {}
    account = AccountSnapshot(
        account_id=A,
        namespaces=tuple(Namespace(n) for n in [*sizes, "new"]),
        counts=MappingProxyType(
            {n: NamespaceCount(size, 0, completed.get(n, 100.0)) for n, size in sizes.items()}
        ),
        namespaces_listed=True,
    )
    return Snapshot(accounts=(account,))


def order(plan: _Plan, names: list[str]) -> list[str]:
    work = _AccountWork(A, 0.0)
    return sorted(names, key=lambda n: plan.priority(work, Namespace(n)))


def test_estimated_pages() -> None:
    assert [estimated_pages(n) for n in (None, 0, 1, 10_000, 10_001)] == [1, 1, 1, 1, 2]


def test_budget_that_fits_walks_the_largest_first() -> None:
    """When everything fits, the longest cursor walks start first (they bound the poll)."""
    snap = previous({"small": 5, "huge": 500_000, "mid": 50_000})
    plan = _Plan(snap, budget=1000)
    assert not plan.binding
    assert order(plan, ["small", "mid", "huge", "new"]) == ["huge", "mid", "small", "new"]


def test_binding_budget_counts_cheap_namespaces_first_then_the_stalest() -> None:
    """When the budget binds, cheap namespaces come first; large ones by staleness."""
    snap = previous(
        {"a": 5, "b": 15_000, "big1": 900_000, "big2": 800_000},
        completed={"big1": 500.0, "big2": 200.0},
    )
    plan = _Plan(snap, budget=20)  # 1 + 2 + 90 + 80 + 1 (new) pages needed
    assert plan.binding
    assert order(plan, ["big1", "big2", "b", "a", "new"]) == ["a", "new", "b", "big2", "big1"]


def test_refresh_seconds_and_full_refresh() -> None:
    """Each new count records the time since the previous one; the gauge is the slowest."""
    ns = (Namespace("x"), Namespace("y"))
    state = next_account(
        None, AccountPoll(A, 0, 10, ns, {"x": ObjectCount(1, 0), "y": ObjectCount(1, 0)})
    )
    assert _full_refresh([state]) is None  # nothing refreshed twice yet
    state = next_account(state, AccountPoll(A, 300, 310, ns, {"x": ObjectCount(2, 0)}))
    state = next_account(
        state,
        AccountPoll(
            A, 600, 610, ns, {"x": ObjectCount(3, 0), "y": ObjectCount(5, 0, completed_at=905.0)}
        ),
    )
    assert state.counts["x"].refresh_seconds == 300
    assert state.counts["y"].refresh_seconds == 895  # 10 -> 905: walked across intervals
    assert _full_refresh([state]) == 895


class _FakeClient:
    def __init__(self, latency: float | None) -> None:
        self.latency = latency


def test_worker_count_follows_budget_and_latency() -> None:
    """Workers = burst rate x latency x 1.25, within [4, max]; max before latency is known."""
    from do_exporter.poller import Poller

    def workers(latency: float | None, burst: float | None = 100.0, top: int = 64) -> int:
        poller = Poller(_FakeClient(latency), max_workers=top, burst_rate=burst)  # type: ignore[arg-type]
        return poller.workers()

    assert workers(None) == 64
    assert workers(0.5) == 63
    assert workers(0.05) == 7
    assert workers(0.001) == 4
    assert workers(5.0) == 64
    assert workers(0.5, burst=None) == 64
    assert workers(0.5, top=2) == 2


def test_pool_runs_tasks_concurrently_even_with_idle_workers() -> None:
    """Eight tasks that all wait for each other finish only if they truly run at once,
    even when a worker sat idle before they were queued."""
    import threading

    from do_exporter.poller import _Pool, _Run

    pool = _Pool(threading.Event())
    pool.limit = 8
    warmup = _Run()
    pool.submit(warmup, lambda: None)
    assert pool.wait(warmup, None, time.time)
    barrier = threading.Barrier(8, timeout=5)
    run = _Run()
    for _ in range(8):
        pool.submit(run, barrier.wait)
    assert pool.wait(run, time.time() + 10, time.time)
    assert not barrier.broken


def test_pool_limit_holds_across_runs() -> None:
    """Tasks of several polls together never exceed the pool's limit."""
    import threading

    from do_exporter.poller import _Pool, _Run

    pool = _Pool(threading.Event())
    pool.limit = 2
    lock = threading.Lock()
    running = [0, 0]  # now, peak

    def task() -> None:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    runs = [_Run(), _Run()]
    for run in runs:
        for _ in range(5):
            pool.submit(run, task)
    for run in runs:
        assert pool.wait(run, time.time() + 10, time.time)
    assert running[1] == 2


def test_ready_after_any_account_listed_or_an_empty_complete_poll() -> None:
    ok = AccountSnapshot(account_id=A, namespaces_listed=True)
    bad = AccountSnapshot(account_id="b" * 32)
    assert not Snapshot().ready
    assert Snapshot(accounts=(ok, bad), generation=1).ready
    assert not Snapshot(accounts=(bad,), generation=1).ready
    assert Snapshot(accounts=(), generation=1, complete=True).ready


def test_binding_plan_says_so_in_the_log() -> None:
    """The budget warning names the requests needed, and only when the plan is bound."""
    snap = previous({"a": 5, "big": 900_000})
    assert _Plan(snap, budget=20).requests_needed == 1 + 90 + 1
    assert _Plan(snap, budget=20).binding and not _Plan(snap, budget=1000).binding
