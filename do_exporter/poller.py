"""One poll: accounts, then namespaces, then object counts, all paced by the rate limiter.

Work runs on one long-lived pool of daemon threads per :class:`Poller`, fed from one
priority queue shared by every account and every poll, so the request budget stays busy and
``--max-concurrency`` holds across polls. Discovery and namespace lists come first, then the
counts, in an order that depends on whether the poll fits the request budget:

- It fits: the largest known namespaces first (their sequential cursor walks decide when the
  poll can end).
- It does not: the cheapest namespaces first, up to half the budget of an interval, so most
  namespaces stay fresh every interval; then the rest, stalest first.

A poll with a deadline (the daemon uses its interval) publishes what it has when the
deadline comes. Walks still running then are not cancelled: they carry on, and their result
joins a later poll; a namespace (or namespace list) whose request is in flight is not started
again. That is how a huge namespace is spread over several intervals without holding up the
small ones. An account's poll counts as failed when a count failed, when a due count could
not even start before the deadline (unless the budget deliberately deferred it), or when a
walk in flight made no progress during the poll (a rate-limit block, a hung API).
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

Outcome = ObjectCount | str | None  # a count, GONE, or None for a failure
Key = tuple[str, str]  # (account id, namespace id)


class _Run:
    """One poll's share of the pool: its open/closed state and its unfinished tasks."""

    def __init__(self) -> None:
        self.open = True
        self.pending = 0


class _Pool:
    """Daemon worker threads and one priority queue, living as long as the poller.

    Threads start when queued work outnumbers idle threads, up to ``limit``; surplus threads
    leave when idle. Tasks of a closed run are skipped when they come up. Daemon threads,
    unlike ``concurrent.futures``, never hold up process exit: a request stuck in a read
    timeout cannot delay shutdown.
    """

    def __init__(self, cancel: threading.Event) -> None:
        self._cancel = cancel
        self._heap: list[tuple[float, int, _Run, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._threads = 0
        self._idle = 0
        self.limit = 1

    def submit(self, run: _Run, task: Callable[[], None], priority: float = 0.0) -> None:
        """Queue a task of ``run`` (lower priority values first); ignored once it closed."""
        with self._cond:
            if not run.open:
                return
            heapq.heappush(self._heap, (priority, next(self._seq), run, task))
            run.pending += 1
            if len(self._heap) > self._idle and self._threads < self.limit:
                self._threads += 1
                threading.Thread(target=self._work, name="poll-worker", daemon=True).start()
            else:
                self._cond.notify()

    def wait(self, run: _Run, deadline: float | None, clock: Callable[[], float]) -> bool:
        """Block until ``run`` has no task left or ``deadline`` passes, then close it.

        Returns True if every task finished. Tasks still queued are skipped from now on;
        running ones go on. Raises :class:`Cancelled` on shutdown.
        """
        with self._cond:
            while run.pending and not self._cancel.is_set():
                timeout = 0.2 if deadline is None else min(0.2, deadline - clock())
                if timeout <= 0:
                    break
                self._cond.wait(timeout)
            run.open = False
            finished = run.pending == 0
        if self._cancel.is_set():
            raise Cancelled()
        return finished

    def _work(self) -> None:
        while True:
            with self._cond:
                self._idle += 1
                while not self._heap and not self._cancel.is_set():
                    if not self._cond.wait(1.0) and self._threads > self.limit:
                        break
                self._idle -= 1
                if not self._heap or self._cancel.is_set():
                    self._threads -= 1
                    return
                _, _, run, task = heapq.heappop(self._heap)
                if not run.open:
                    run.pending -= 1
                    continue
            try:
                task()
            except Cancelled:
                pass
            except Exception:  # a bug must not kill the poll: log it; the task counts failed
                log.exception("poll task crashed")
            finally:
                with self._cond:
                    run.pending -= 1
                    self._cond.notify_all()


@dataclass
class _AccountWork:
    """One account's share of a poll, filled in by the tasks (under the poller's lock)."""

    account_id: str
    started_at: float
    namespaces: tuple[Namespace, ...] | None = None
    counts: dict[str, Outcome] = field(default_factory=dict)
    due: set[str] = field(default_factory=set)
    finished_at: float = 0.0


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
        self._pool = _Pool(self._cancel)
        self._lock = threading.Lock()
        self._inflight: dict[Key, int] = {}  # walks running -> pages read so far
        self._listing: set[str] = set()  # accounts whose namespace list is in flight
        self._discovering = False  # GET /accounts in flight
        self._late: dict[Key, Outcome] = {}  # walks that ended after their poll closed

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
        """Namespace walks running now (some may have started in earlier polls)."""
        with self._lock:
            return len(self._inflight)

    def poll(self, previous: Snapshot, deadline: float | None = None) -> Snapshot:
        """Poll every account once; return the next snapshot (never raises API errors).

        ``deadline`` (Unix time) bounds how long the poll waits; see the module docstring.
        Raises :class:`~do_exporter.ratelimit.Cancelled` on shutdown.
        """
        started = self._clock()
        requests_before = self._client.requests_made
        self._pool.limit = self.workers()
        with self._lock:
            progress_before = dict(self._inflight)
        run = _Run()
        plan = _Plan(previous, self._budget)
        works: list[_AccountWork] = []
        discovered = [bool(self._account_ids)]  # True once the account list is trustworthy

        def start(account_ids: Sequence[str]) -> None:
            with self._lock:
                new = [_AccountWork(account_id, started) for account_id in account_ids]
                works.extend(new)
            for work in new:
                self._pool.submit(run, self._list_task(work, plan, run), -math.inf)

        if self._account_ids:
            start(self._account_ids)
        else:
            self._pool.submit(run, self._discover_task(previous, discovered, start), -math.inf)
        finished = self._pool.wait(run, deadline, self._clock)

        with self._lock:
            late, self._late = self._late, {}
            progress_after = dict(self._inflight)
            accounts = [
                self._account_poll(work, previous, plan, late, progress_before, progress_after)
                for work in works
            ]
            # Walks of accounts whose list failed wait for a later poll; the rest are gone.
            unlisted = {w.account_id for w in works if w.namespaces is None}
            self._late.update({k: v for k, v in late.items() if k[0] in unlisted})
        snapshot = Snapshot(
            accounts=tuple(accounts),
            generation=previous.generation + 1,
            full_refresh_seconds=_full_refresh(accounts),
            complete=discovered[0] and finished and all(a.last_poll_success for a in accounts),
        )
        self._log_summary(snapshot, works, started, self._client.requests_made - requests_before)
        if plan.binding:
            log.warning(
                "the request budget cannot count every namespace each poll: "
                "the largest are refreshed less often",
                requests_needed=plan.requests_needed,
                budget_per_poll=self._budget,
                full_refresh_seconds=snapshot.full_refresh_seconds,
            )
        return snapshot

    def _account_poll(
        self,
        work: _AccountWork,
        previous: Snapshot,
        plan: _Plan,
        late: dict[Key, Outcome],
        progress_before: dict[Key, int],
        progress_after: dict[Key, int],
    ) -> AccountSnapshot:
        """Turn what the tasks gathered for one account into its next state (under lock)."""
        counts = dict(work.counts)
        stalled = False
        if work.namespaces is not None:
            for ns in work.namespaces:
                key = (work.account_id, ns.id)
                if ns.id not in counts and key in late:
                    counts[ns.id] = late.pop(key)
                if ns.id in counts:
                    continue
                if key in progress_after:  # a walk in flight: fine while it moves
                    stalled |= progress_after[key] <= progress_before.get(key, 0)
                elif ns.id in work.due and not plan.binding:
                    stalled = True  # due, never started, and not deferred on purpose
        if stalled:
            log.warning(
                "counts are not progressing (rate-limit block or a hung API?)",
                account_id=work.account_id,
            )
        poll = AccountPoll(
            account_id=work.account_id,
            started_at=work.started_at,
            finished_at=work.finished_at or self._clock(),
            namespaces=work.namespaces,
            counts=counts,
            incomplete=stalled,
        )
        return next_account(previous.account(work.account_id), poll)

    # -- tasks ----------------------------------------------------------------------------

    def _discover_task(
        self,
        previous: Snapshot,
        discovered: list[bool],
        start: Callable[[Sequence[str]], None],
    ) -> Callable[[], None]:
        def task() -> None:
            known = [a.account_id for a in previous.accounts]
            with self._lock:
                stuck = self._discovering
                self._discovering = True
            if stuck:  # the previous poll's discovery still hangs: poll what we knew
                start(known)
                return
            try:
                found = [account.id for account in self._client.list_accounts()]
            except CloudflareAPIError:
                # Keep polling the accounts we knew; the poll is still incomplete.
                log.error("account discovery failed", known_accounts=len(known))
                start(known)
                return
            finally:
                with self._lock:
                    self._discovering = False
            if not found:
                log.warning("the API token can read no account: nothing to export")
            discovered[0] = True
            start(found)

        return task

    def _list_task(self, work: _AccountWork, plan: _Plan, run: _Run) -> Callable[[], None]:
        def task() -> None:
            with self._lock:
                if work.account_id in self._listing:
                    return  # the previous poll's list is still stuck: count as failed
                self._listing.add(work.account_id)
            try:
                namespaces = tuple(self._client.list_namespaces(work.account_id))
            except CloudflareAPIError:
                namespaces = None
            finally:
                with self._lock:
                    self._listing.discard(work.account_id)
            with self._lock:
                if not run.open:
                    return  # too late for this poll; the next one lists again
                work.namespaces = namespaces
                work.finished_at = self._clock()
                if namespaces is None:
                    return
                # A walk still running, or finished since the last poll, is not due again.
                due = [
                    ns
                    for ns in namespaces
                    if (key := (work.account_id, ns.id)) not in self._inflight
                    and key not in self._late
                ]
                work.due = {ns.id for ns in due}
            for ns in due:
                self._pool.submit(run, self._count_task(work, ns, run), plan.priority(work, ns))

        return task

    def _count_task(self, work: _AccountWork, ns: Namespace, run: _Run) -> Callable[[], None]:
        key = (work.account_id, ns.id)

        def progress(pages: int) -> None:
            with self._lock:
                self._inflight[key] = pages

        def task() -> None:
            with self._lock:
                if not run.open or key in self._inflight:
                    return
                self._inflight[key] = 0
            outcome: Outcome = None
            try:
                count = self._client.count_objects(work.account_id, ns.id, progress)
                outcome = replace(count, completed_at=self._clock())
            except CloudflareAPIError as exc:
                if exc.not_found and NAMESPACE_NOT_FOUND in exc.codes:
                    outcome = GONE  # deleted between listing and counting
            finally:
                with self._lock:
                    del self._inflight[key]
                    if run.open:
                        work.counts[ns.id] = outcome
                        work.finished_at = self._clock()
                    else:  # the poll's deadline passed: a later poll picks it up
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
        if failed_accounts or failed_namespaces or not snapshot.complete:
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
        self.requests_needed = sum(estimated_pages(objects) for _, _, objects in sizes)
        self.binding = budget is not None and self.requests_needed > budget
        self._cheap: set[Key] = set()
        if self.binding and budget is not None:
            spent = 0
            for account, ns_id, objects in sorted(sizes, key=lambda s: estimated_pages(s[2])):
                spent += estimated_pages(objects)
                if spent > budget * FRESH_SHARE:
                    break
                self._cheap.add((account.account_id, ns_id))
        self._previous = previous

    def priority(self, work: _AccountWork, ns: Namespace) -> float:
        account = self._previous.account(work.account_id)
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
