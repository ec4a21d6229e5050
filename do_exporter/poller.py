"""One poll: accounts, then namespaces, then object counts, all paced by the rate limiter.

Work runs on daemon threads fed from one priority queue shared by every account, so the
request budget stays busy: listing an account's namespaces comes first, then its namespaces
are counted. The order of the counts depends on whether the poll fits the request budget:

- It fits: the largest known namespaces first (their sequential cursor walks decide when the
  poll can end).
- It does not: the cheapest namespaces first, up to half the budget of an interval, so most
  namespaces stay fresh every interval; then the rest, stalest first.

A poll with a deadline (the daemon uses its interval) publishes what it has when the
deadline comes. Walks still running then are not cancelled: they carry on, and their result
joins the next poll; a namespace whose walk is in flight is not started again. That is how a
huge namespace is spread over several intervals without holding up the small ones.
A failure stays with the namespace or account it hit.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import structlog

from .cloudflare import OBJECTS_PER_PAGE, CloudflareAPIError, CloudflareClient
from .model import (
    GONE,
    AccountPoll,
    AccountSnapshot,
    Namespace,
    ObjectCount,
    Snapshot,
    next_account,
)
from .ratelimit import Cancelled

log = structlog.get_logger("do_exporter.poller")

NAMESPACE_NOT_FOUND = 10066  # Cloudflare's code for an unknown namespace id (HTTP 404)
FRESH_SHARE = 0.5  # share of an interval's budget kept for the cheapest namespaces
MIN_WORKERS = 4

Task = Callable[[], None]
Outcome = ObjectCount | str | None  # a count, GONE, or None for a failure


class _WorkPool:
    """Run tasks (which may add tasks) on up to ``workers`` daemon threads.

    Threads start as tasks arrive, so a poll of three namespaces uses three threads. Daemon
    threads, unlike ``concurrent.futures``, never hold up process exit: a request stuck in
    a read timeout cannot delay shutdown.
    """

    def __init__(self, workers: int, cancel: threading.Event) -> None:
        self._max_workers = workers
        self._cancel = cancel
        self._heap: list[tuple[float, int, Task]] = []
        self._seq = itertools.count()
        self._pending = 0  # queued + running
        self._idle = 0
        self._threads = 0
        self._closed = False
        self._cond = threading.Condition()

    def submit(self, task: Task, priority: float = 0.0) -> None:
        """Queue a task; lower priority values run first. Ignored once the pool closed."""
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._heap, (priority, next(self._seq), task))
            self._pending += 1
            if self._idle == 0 and self._threads < self._max_workers:
                self._threads += 1
                threading.Thread(
                    target=self._work, name=f"poll-worker-{self._threads}", daemon=True
                ).start()
            else:
                self._cond.notify()

    def run(self, deadline: float | None = None, clock: Callable[[], float] = time.time) -> bool:
        """Block until every task has finished or ``deadline`` passes; True if all finished.

        At the deadline, queued tasks are dropped and running ones go on in the background.
        """
        with self._cond:
            while self._pending and not self._cancel.is_set():
                timeout = 0.2 if deadline is None else min(0.2, deadline - clock())
                if timeout <= 0:
                    break
                self._cond.wait(timeout)
            finished = self._pending == 0
            self._closed = True
            self._pending -= len(self._heap)
            self._heap.clear()
            self._cond.notify_all()
        if self._cancel.is_set():
            raise Cancelled()
        return finished

    def _work(self) -> None:
        while True:
            with self._cond:
                self._idle += 1
                while not self._heap and not self._closed and not self._cancel.is_set():
                    self._cond.wait(0.2)
                self._idle -= 1
                if not self._heap or self._cancel.is_set():
                    self._threads -= 1
                    return
                _, _, task = heapq.heappop(self._heap)
            try:
                task()
            except Cancelled:
                pass
            except Exception:  # a bug must not kill the poll: log it; the task counts failed
                log.exception("poll task crashed")
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()


@dataclass
class _AccountWork:
    """One account's share of a poll, filled in by the tasks."""

    account_id: str
    started_at: float
    namespaces: tuple[Namespace, ...] | None = None
    counts: dict[str, Outcome] = field(default_factory=dict)
    finished_at: float = 0.0
    remaining: int = 0


def estimated_pages(objects: int | None) -> int:
    """Requests a walk over a namespace of that many objects costs (unknown: one)."""
    return max(1, math.ceil((objects or 0) / OBJECTS_PER_PAGE))


class Poller:
    """Produces the next :class:`Snapshot` from the previous one, one poll per call.

    ``budget_per_poll`` is how many requests the rate limit allows in one interval (None:
    no limit worth planning for); it decides the order of the counts (module docstring).

    The number of worker threads follows Little's law: requests in flight = rate x latency.
    With ``burst_rate`` (requests a second the limiter lets through in a burst) and the
    client's observed latency, a poll runs ``burst_rate * latency * 1.25`` workers (at least
    4, at most ``max_workers``): enough to keep the budget busy at 500 ms a request, no more
    threads than that at 50 ms. Before any latency is known it uses ``max_workers``.
    """

    def __init__(
        self,
        client: CloudflareClient,
        *,
        account_ids: Sequence[str] = (),
        max_workers: int = 32,
        budget_per_poll: float | None = None,
        burst_rate: float | None = None,
        cancel: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._account_ids = tuple(account_ids)
        self._max_workers = max_workers
        self._budget = budget_per_poll
        self._burst_rate = burst_rate
        self._cancel = cancel or threading.Event()
        self._clock = clock
        self._lock = threading.Lock()
        self._inflight: set[tuple[str, str]] = set()
        self._late: dict[tuple[str, str], Outcome] = {}
        self._open_polls: set[int] = set()
        self._poll_ids = itertools.count(1)

    @property
    def account_ids(self) -> tuple[str, ...]:
        """The configured accounts (empty: discovered with ``GET /accounts`` each poll)."""
        return self._account_ids

    def workers(self) -> int:
        """Worker threads for the next poll (see the class docstring)."""
        latency = self._client.latency
        if self._burst_rate is None or latency is None:
            return self._max_workers
        wanted = math.ceil(self._burst_rate * latency * 1.25)
        return max(min(MIN_WORKERS, self._max_workers), min(self._max_workers, wanted))

    def inflight(self) -> int:
        """Namespace walks still running from earlier polls."""
        with self._lock:
            return len(self._inflight)

    def poll(self, previous: Snapshot, deadline: float | None = None) -> Snapshot:
        """Poll every account once; return the next snapshot (never raises API errors).

        ``deadline`` (Unix time) bounds how long the poll waits for counts; see the module
        docstring. Raises :class:`~do_exporter.ratelimit.Cancelled` on shutdown.
        """
        started = self._clock()
        requests_before = self._client.requests_made
        poll_id = next(self._poll_ids)
        with self._lock:
            self._open_polls.add(poll_id)
        account_ids, discovered = self._accounts(previous)
        pool = _WorkPool(self.workers(), self._cancel)
        works = [_AccountWork(account_id, started) for account_id in account_ids]
        plan = _Plan(previous, self._budget)
        for work in works:
            pool.submit(self._list_task(work, plan, pool, poll_id), priority=-math.inf)
        try:
            finished = pool.run(deadline, self._clock)
        finally:
            with self._lock:
                self._open_polls.discard(poll_id)
                late = self._late
                self._late = {}
        accounts = []
        for work in works:
            counts = dict(work.counts)
            for (account_id, ns_id), outcome in late.items():
                if account_id == work.account_id and ns_id not in counts:
                    counts[ns_id] = outcome
            poll = AccountPoll(
                account_id=work.account_id,
                started_at=work.started_at,
                finished_at=work.finished_at or self._clock(),
                namespaces=work.namespaces,
                counts=counts,
            )
            accounts.append(next_account(previous.account(work.account_id), poll))
        snapshot = Snapshot(
            accounts=tuple(accounts),
            generation=previous.generation + 1,
            full_refresh_seconds=_full_refresh(accounts),
            complete=discovered and finished and all(a.last_poll_success for a in accounts),
        )
        self._log_summary(snapshot, works, started, self._client.requests_made - requests_before)
        return snapshot

    def _accounts(self, previous: Snapshot) -> tuple[tuple[str, ...], bool]:
        """The accounts to poll, and whether that list is trustworthy."""
        if self._account_ids:
            return self._account_ids, True
        try:
            found = tuple(account.id for account in self._client.list_accounts())
        except CloudflareAPIError:
            # Keep polling the accounts we knew; the poll is still incomplete.
            known = tuple(a.account_id for a in previous.accounts)
            log.error("account discovery failed", known_accounts=len(known))
            return known, False
        if not found:
            log.warning("the API token can read no account: nothing to export")
        return found, True

    def _list_task(self, work: _AccountWork, plan: _Plan, pool: _WorkPool, poll_id: int) -> Task:
        def task() -> None:
            try:
                namespaces = tuple(self._client.list_namespaces(work.account_id))
            except CloudflareAPIError:
                work.finished_at = self._clock()
                return
            work.namespaces = namespaces
            with self._lock:
                # A walk still running, or finished since the last poll, is not due again.
                due = [
                    ns
                    for ns in namespaces
                    if (key := (work.account_id, ns.id)) not in self._inflight
                    and key not in self._late
                ]
                work.remaining = len(due)
                if not due:
                    work.finished_at = self._clock()
            for ns in due:
                pool.submit(self._count_task(work, ns, poll_id), priority=plan.priority(work, ns))

        return task

    def _count_task(self, work: _AccountWork, ns: Namespace, poll_id: int) -> Task:
        key = (work.account_id, ns.id)

        def task() -> None:
            with self._lock:
                self._inflight.add(key)
            outcome: Outcome = None
            try:
                count = self._client.count_objects(work.account_id, ns.id)
                outcome = replace(count, completed_at=self._clock())
            except CloudflareAPIError as exc:
                if exc.not_found and NAMESPACE_NOT_FOUND in exc.codes:
                    outcome = GONE  # deleted between listing and counting
            finally:
                with self._lock:
                    self._inflight.discard(key)
                    if poll_id in self._open_polls:
                        work.counts[ns.id] = outcome
                        work.remaining -= 1
                        if work.remaining == 0:
                            work.finished_at = self._clock()
                    else:  # the poll's deadline passed: the next poll picks it up
                        self._late[key] = outcome

        return task

    def _log_summary(
        self, snapshot: Snapshot, works: list[_AccountWork], started: float, requests: int
    ) -> None:
        failed_accounts = [w.account_id for w in works if w.namespaces is None]
        failed_namespaces = [
            f"{w.account_id}/{ns_id}"
            for w in works
            for ns_id, outcome in w.counts.items()
            if outcome is None
        ]
        fields = {
            "duration_seconds": round(self._clock() - started, 3),
            "requests": requests,
            "accounts": len(snapshot.accounts),
            "namespaces": sum(len(a.namespaces) for a in snapshot.accounts),
            "objects": sum(c.objects for a in snapshot.accounts for c in a.counts.values()),
            "objects_with_stored_data": sum(
                c.with_stored_data for a in snapshot.accounts for c in a.counts.values()
            ),
            "namespaces_gone": sum(
                1 for w in works for outcome in w.counts.values() if outcome == GONE
            ),
            "walks_in_flight": self.inflight(),
        }
        if snapshot.full_refresh_seconds is not None:
            fields["full_refresh_seconds"] = round(snapshot.full_refresh_seconds, 3)
        if failed_accounts or failed_namespaces:
            log.warning(
                "poll finished with failures",
                **fields,
                failed_accounts=failed_accounts,
                failed_namespaces=failed_namespaces[:20],
                failed_namespaces_total=len(failed_namespaces),
            )
        else:
            log.info("poll finished", **fields)


class _Plan:
    """Decides the order of one poll's counts from what the previous snapshot knew."""

    def __init__(self, previous: Snapshot, budget: float | None) -> None:
        sizes = [
            (account, ns.id, account.counts[ns.id].objects if ns.id in account.counts else None)
            for account in previous.accounts
            for ns in account.namespaces
        ]
        total = sum(estimated_pages(objects) for _, _, objects in sizes)
        self.binding = budget is not None and total > budget
        self._cheap: set[tuple[str, str]] = set()
        if self.binding and budget is not None:
            spent = 0
            for account, ns_id, objects in sorted(sizes, key=lambda s: estimated_pages(s[2])):
                spent += estimated_pages(objects)
                if spent > budget * FRESH_SHARE:
                    break
                self._cheap.add((account.account_id, ns_id))
        self._previous = previous

    def priority(self, work: _AccountWork, ns: Namespace) -> float:
        account: AccountSnapshot | None = self._previous.account(work.account_id)
        count = account.counts.get(ns.id) if account else None
        pages = estimated_pages(count.objects if count else None)
        if not self.binding:
            return -float(pages)  # longest walks first
        if (work.account_id, ns.id) in self._cheap or count is None:
            return float(pages) - 1e12  # cheap (or never counted) first, cheapest first
        return count.completed_at  # then the stalest


def _full_refresh(accounts: list[AccountSnapshot]) -> float | None:
    """Seconds between the last two complete counts of the slowest-refreshed namespace."""
    periods = [
        count.refresh_seconds
        for account in accounts
        for count in account.counts.values()
        if count.refresh_seconds is not None
    ]
    return max(periods) if periods else None
