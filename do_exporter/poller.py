"""One poll: accounts, then namespaces, then object counts, all paced by the rate limiter.

Work runs on a small pool of daemon threads fed from one priority queue shared by every
account, so the request budget stays busy: listing an account's namespaces comes first, then
its namespaces are counted, the largest known ones first (the longest cursor walks decide
when a poll can end). A failure stays with the namespace or account it hit.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from .cloudflare import CloudflareAPIError, CloudflareClient
from .model import (
    GONE,
    AccountPoll,
    Namespace,
    ObjectCount,
    Snapshot,
    next_account,
)
from .ratelimit import Cancelled

log = structlog.get_logger("do_exporter.poller")

NAMESPACE_NOT_FOUND = 10066  # Cloudflare's code for an unknown namespace id (HTTP 404)

Task = Callable[[], None]


class _WorkPool:
    """Run tasks (which may add tasks) on up to ``workers`` daemon threads until none remain.

    Daemon threads, unlike ``concurrent.futures``, never hold up process exit: a request
    stuck in a read timeout cannot delay shutdown.
    """

    def __init__(self, workers: int, cancel: threading.Event) -> None:
        self._workers = workers
        self._cancel = cancel
        self._heap: list[tuple[float, int, Task]] = []
        self._seq = itertools.count()
        self._pending = 0
        self._cond = threading.Condition()

    def submit(self, task: Task, priority: float = 0.0) -> None:
        """Queue a task; lower priority values run first."""
        with self._cond:
            heapq.heappush(self._heap, (priority, next(self._seq), task))
            self._pending += 1
            self._cond.notify()

    def run(self) -> None:
        """Block until every task (including tasks added by tasks) has finished."""
        threads = [
            threading.Thread(target=self._work, name=f"poll-worker-{i}", daemon=True)
            for i in range(self._workers)
        ]
        for thread in threads:
            thread.start()
        with self._cond:
            while self._pending and not self._cancel.is_set():
                self._cond.wait(0.2)
            self._pending = 0
            self._heap.clear()
            self._cond.notify_all()
        if self._cancel.is_set():
            raise Cancelled()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._heap and self._pending and not self._cancel.is_set():
                    self._cond.wait(0.2)
                if not self._heap or self._cancel.is_set():
                    return
                _, _, task = heapq.heappop(self._heap)
            try:
                task()
            except Cancelled:
                return
            except Exception:  # a bug must not kill the poll: log it, count as failed
                log.exception("poll task crashed")
            finally:
                with self._cond:
                    self._pending = max(0, self._pending - 1)
                    self._cond.notify_all()


@dataclass
class _AccountWork:
    account_id: str
    started_at: float
    namespaces: tuple[Namespace, ...] | None = None
    counts: dict[str, ObjectCount | str | None] = field(default_factory=dict)
    finished_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    remaining: int = 0


class Poller:
    """Produces the next :class:`Snapshot` from the previous one, one poll per call."""

    def __init__(
        self,
        client: CloudflareClient,
        *,
        account_ids: Sequence[str] = (),
        max_workers: int = 32,
        cancel: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._account_ids = tuple(account_ids)
        self._max_workers = max_workers
        self._cancel = cancel or threading.Event()
        self._clock = clock

    def poll(self, previous: Snapshot) -> Snapshot:
        """Poll every account once; return the next snapshot (never raises API errors).

        Raises :class:`~do_exporter.ratelimit.Cancelled` when shutdown interrupts it.
        """
        started = self._clock()
        requests_before = self._client.requests_made
        account_ids, discovered = self._accounts(previous)
        pool = _WorkPool(self._max_workers, self._cancel)
        works = [_AccountWork(account_id, started) for account_id in account_ids]
        for work in works:
            pool.submit(self._list_task(work, previous, pool), priority=float("-inf"))
        pool.run()

        accounts = []
        for work in works:
            poll = AccountPoll(
                account_id=work.account_id,
                started_at=work.started_at,
                finished_at=work.finished_at or self._clock(),
                namespaces=work.namespaces,
                counts=dict(work.counts),
            )
            accounts.append(next_account(previous.account(work.account_id), poll))
        snapshot = Snapshot(
            accounts=tuple(accounts),
            generation=previous.generation + 1,
            complete=discovered and all(a.last_poll_success for a in accounts),
        )
        self._log_summary(snapshot, works, started, self._client.requests_made - requests_before)
        return snapshot

    @property
    def account_ids(self) -> tuple[str, ...]:
        """The configured accounts (empty: discovered with ``GET /accounts`` each poll)."""
        return self._account_ids

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

    def _list_task(self, work: _AccountWork, previous: Snapshot, pool: _WorkPool) -> Task:
        def task() -> None:
            try:
                namespaces = tuple(self._client.list_namespaces(work.account_id))
            except CloudflareAPIError:
                work.finished_at = self._clock()
                return
            work.namespaces = namespaces
            work.remaining = len(namespaces)
            if not namespaces:
                work.finished_at = self._clock()
                return
            known = previous.account(work.account_id)
            for ns in namespaces:
                size = known.counts[ns.id].objects if known and ns.id in known.counts else 0
                pool.submit(self._count_task(work, ns), priority=-float(size))

        return task

    def _count_task(self, work: _AccountWork, ns: Namespace) -> Task:
        def task() -> None:
            outcome: ObjectCount | str | None = None
            try:
                outcome = self._client.count_objects(work.account_id, ns.id)
            except CloudflareAPIError as exc:
                if exc.not_found and NAMESPACE_NOT_FOUND in exc.codes:
                    outcome = GONE  # deleted between listing and counting
            finally:
                with work.lock:
                    work.counts[ns.id] = outcome
                    work.remaining -= 1
                    if work.remaining == 0:
                        work.finished_at = self._clock()

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
        gone = sum(1 for w in works for outcome in w.counts.values() if outcome == GONE)
        fields = {
            "duration_seconds": round(self._clock() - started, 3),
            "requests": requests,
            "accounts": len(snapshot.accounts),
            "namespaces": sum(len(a.namespaces) for a in snapshot.accounts),
            "objects": sum(c.objects for a in snapshot.accounts for c in a.counts.values()),
            "objects_with_stored_data": sum(
                c.with_stored_data for a in snapshot.accounts for c in a.counts.values()
            ),
            "namespaces_gone": gone,
        }
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
