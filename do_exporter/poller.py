"""The executor: carries out what :mod:`do_exporter.planner` decides, on threads, over HTTP.

A poll asks the planner what to start (:func:`~do_exporter.planner.poll_start`), runs
discovery and namespace lists on a small pool of their own (they never wait behind object
walks, and their requests go first in the rate limiter's queue), starts the walks each list
makes due on the walk pool in the planner's order, waits until everything ended or the
deadline came, and hands what it gathered to :func:`~do_exporter.planner.publish`.

Walks still running at the deadline are not cancelled: they carry on, and their result joins
a later poll; a namespace (or list, or discovery) whose request is in flight is not started
again. That is how a huge namespace is spread over several intervals without holding up the
small ones. All mutable state lives in :class:`Poller` under one lock; every decision about
it is a pure function of a copy (:class:`~do_exporter.planner.InFlight`).
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from .analytics import AnalyticsError, LimitsBook, Retry, Window, decode_answer, fetch_usage
from .cloudflare import CloudflareAPIError, CloudflareClient
from .model import GONE, Namespace, Snapshot
from .planner import (
    AnalyticsAnswer,
    AnalyticsPlan,
    CountOrder,
    CountPlan,
    Credential,
    Gathered,
    InFlight,
    Key,
    Outcome,
    WalkState,
    analytics_due,
    counts_due,
    estimated_pages,
    lane_for,
    poll_start,
    publish,
)
from .ratelimit import Cancelled, Lane, RateLimiter

log = structlog.get_logger("do_exporter.poller")

NAMESPACE_NOT_FOUND = 10066  # Cloudflare's code for an unknown namespace id (HTTP 404)
MIN_WORKERS = 4
CONTROL_WORKERS = 4  # threads for discovery and namespace lists, apart from the walks
BULK_WORKERS = 4  # threads for walks that queue in the BULK lane from their first page
RATE_WINDOW = 300.0

__all__ = ["Poller", "Source", "estimated_pages"]


def graphql_sender(
    client: CloudflareClient, account_id: str
) -> Callable[[Mapping[str, Any]], Mapping[str, Any] | AnalyticsError]:
    """The analytics' ``send``: one GraphQL POST of the account through the client, its
    decoded document (or why there is none); a request that got no answer is an
    :class:`AnalyticsError` too, so the analytics decide about retrying."""

    def send(body: Mapping[str, Any]) -> Mapping[str, Any] | AnalyticsError:
        try:
            answer = client.graphql(account_id, body)
        except CloudflareAPIError as exc:
            return AnalyticsError(exc.kind, exc.args[0], codes=exc.error_codes, status=exc.status)
        return decode_answer(answer.document, status=answer.status)

    return send


@dataclass(frozen=True, slots=True)
class Source:
    """One credential as the executor runs it: what the planner knows, and its client."""

    credential: Credential
    client: CloudflareClient
    limiter: RateLimiter | None = None  # to shape its BULK lane (None: no shaping)


class _Run:
    """One poll's tasks: open until the poll ends, then queued tasks are skipped."""

    def __init__(self) -> None:
        self.open = True
        self.pending = 0
        self.cond = threading.Condition()

    def done(self) -> None:
        with self.cond:
            self.pending -= 1
            self.cond.notify_all()

    def wait(
        self, deadline: float | None, clock: Callable[[], float], cancel: threading.Event
    ) -> bool:
        """Block until no task is left or ``deadline`` passes, then close; True if all ended."""
        with self.cond:
            while self.pending and not cancel.is_set():
                timeout = 0.2 if deadline is None else min(0.2, deadline - clock())
                if timeout <= 0:
                    break
                self.cond.wait(timeout)
            self.open = False
            finished = self.pending == 0
        if cancel.is_set():
            raise Cancelled()
        return finished


class _Pool:
    """Daemon worker threads and one priority queue, living as long as the poller.

    Threads start when queued work outnumbers idle threads, up to ``limit``; surplus threads
    leave when idle. Tasks of a closed run are skipped when they come up. Daemon threads,
    unlike ``concurrent.futures``, never hold up process exit: a request stuck in a read
    timeout cannot delay shutdown.
    """

    def __init__(self, cancel: threading.Event, name: str, limit: int = 1) -> None:
        self._cancel = cancel
        self._name = name
        self._heap: list[tuple[float, int, _Run, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._threads = 0
        self._idle = 0
        self.limit = limit

    def submit(self, run: _Run, task: Callable[[], None], priority: float = 0.0) -> None:
        """Queue a task of ``run`` (lower priority values first); ignored once it closed."""
        with run.cond:
            if not run.open:
                return
            run.pending += 1
        with self._cond:
            heapq.heappush(self._heap, (priority, next(self._seq), run, task))
            if len(self._heap) > self._idle and self._threads < self.limit:
                self._threads += 1
                threading.Thread(target=self._work, name=self._name, daemon=True).start()
            else:
                self._cond.notify()

    def resize(self, limit: int) -> None:
        """Change the thread limit; start threads at once for work already queued."""
        with self._cond:
            self.limit = limit
            while self._threads < self.limit and len(self._heap) > self._idle:
                self._threads += 1
                threading.Thread(target=self._work, name=self._name, daemon=True).start()

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
            try:
                if run.open:
                    task()
            except Cancelled:
                pass
            except Exception:  # a bug must not kill the poll: log it; the task counts failed
                log.exception("poll task crashed")
            finally:
                run.done()


@dataclass
class _PollState:
    """What one poll gathers (mutated by its tasks under the poller's lock)."""

    started_at: float
    owners: dict[str, str]
    discovered: dict[str, tuple[str, ...]]
    lists: dict[str, tuple[Namespace, ...] | None] = field(default_factory=dict)
    listed_at: dict[str, float] = field(default_factory=dict)
    due: dict[str, frozenset[str]] = field(default_factory=dict)
    must_start: set[Key] = field(default_factory=set)
    analytics: dict[str, tuple[Window, AnalyticsAnswer | None]] = field(default_factory=dict)


class Poller:
    """Produces the next :class:`Snapshot` from the previous one, one poll per call.

    One credential: ``Poller(client, account_ids=..., budget_per_poll=...)``. Several:
    ``Poller(sources=[Source(...), ...])``; each polls its own accounts within its own
    budget, in parallel, and an account two credentials reach is polled once.

    The number of walk threads follows Little's law: requests in flight = rate x latency.
    With ``burst_rate`` (requests a second one limiter lets through in a burst) and a
    client's latency to the response head (not counting our own body reading and decoding,
    which would inflate it under load), each credential gets ``burst_rate * latency * 1.25``
    workers; together at least 4, at most ``max_workers``. Before any latency is known it
    starts with 4 and grows as answers come in (re-sized as walks progress), so a first poll
    never holds 64 page bodies in memory at once against a fast API.
    """

    def __init__(
        self,
        client: CloudflareClient | None = None,
        *,
        account_ids: Sequence[str] = (),
        max_workers: int = 32,
        budget_per_poll: float | None = None,
        burst_rate: float | None = None,
        limiter: RateLimiter | None = None,
        sources: Sequence[Source] = (),
        analytics: AnalyticsPlan | None = None,
        cancel: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if client is not None:
            window_polls = 1.0  # polls per rate-limit window: window budget / poll budget
            if limiter is not None and budget_per_poll:
                window_polls = limiter.requests / budget_per_poll
            credential = Credential(
                "default", tuple(account_ids), budget_per_poll, window_polls=window_polls
            )
            sources = (Source(credential, client, limiter), *sources)
        if not sources:
            raise ValueError("a poller needs a client or sources")
        self._sources = {s.credential.name: s for s in sources}
        self._credentials = tuple(s.credential for s in sources)
        self._max_workers = max_workers
        self._burst_rate = burst_rate
        self._cancel = cancel or threading.Event()
        self._clock = clock
        self._walk_pool = _Pool(self._cancel, "poll-worker")
        self._control_pool = _Pool(self._cancel, "poll-control", CONTROL_WORKERS)
        # Usage queries apart from lists: a GraphQL 429 pause never holds up a list.
        self._analytics_pool = _Pool(self._cancel, "poll-analytics", CONTROL_WORKERS)
        # Walks whose every page waits in the BULK lane, apart from the walk pool: threads
        # sleeping for the bulk share never keep the cheap counts of a later poll waiting.
        self._bulk_pool = _Pool(self._cancel, "poll-bulk", BULK_WORKERS)
        self._lock = threading.Lock()
        self._walks: dict[Key, WalkState] = {}
        self._finished: dict[Key, Outcome] = {}
        self._discovering: set[str] = set()
        self._listing: set[str] = set()
        self._late_discovery: dict[str, tuple[str, ...]] = {}
        self._analytics = analytics
        self._querying: set[str] = set()  # accounts whose analytics query runs
        self._denied: dict[str, float] = {}  # account -> when analytics were refused
        self._limits = LimitsBook()  # each account's dataset limits, read from settings
        self._deadline: float | None = None  # the running poll's deadline

    @property
    def account_ids(self) -> tuple[str, ...]:
        """The configured accounts of every credential (empty: all discovered)."""
        return tuple(a for c in self._credentials for a in c.account_ids)

    @property
    def credentials(self) -> tuple[Credential, ...]:
        return self._credentials

    def workers(self) -> int:
        """Walk threads for the next poll (see the class docstring)."""
        floor = min(MIN_WORKERS, self._max_workers)
        if self._burst_rate is None:
            return self._max_workers
        wanted = 0
        for source in self._sources.values():
            latency = source.client.latency
            if latency is None:
                return floor
            wanted += math.ceil(self._burst_rate * latency * 1.25)
        return max(floor, min(self._max_workers, wanted))

    def inflight(self) -> int:
        """Namespace walks running now (some may have started in earlier polls)."""
        with self._lock:
            return len(self._walks)

    def _view(self) -> InFlight:
        """A copy of what runs now (under the lock)."""
        return InFlight(
            discovering=frozenset(self._discovering),
            listing=frozenset(self._listing),
            walks=dict(self._walks),
            finished=dict(self._finished),
        )

    # -- one poll -----------------------------------------------------------------------------

    def poll(self, previous: Snapshot, deadline: float | None = None) -> Snapshot:
        """Poll every account once; return the next snapshot (never raises API errors).

        ``deadline`` (Unix time) bounds how long the poll waits; see the module docstring.
        Raises :class:`~do_exporter.ratelimit.Cancelled` on shutdown.
        """
        started = self._clock()
        self._deadline = deadline
        requests_before = self._requests_made()
        plan = CountPlan(previous, self._credentials)
        for name, source in self._sources.items():
            if source.limiter is not None:
                source.limiter.set_bulk_limit(plan.bulk_limit(name, source.limiter.requests))
        self._walk_pool.resize(self.workers())
        with self._lock:
            inflight = self._view()
            late, self._late_discovery = self._late_discovery, {}
        start = poll_start(previous, self._credentials, inflight, late)
        state = _PollState(started, owners=dict(start.owners), discovered=dict(late))
        run = _Run()
        for name in start.discover:
            self._control_pool.submit(run, self._discover_task(name, state, plan, run))
        for account_id, cred in start.lists:
            self._control_pool.submit(run, self._list_task(account_id, cred, state, plan, run))
        for account_id, cred in start.owners:
            self._submit_analytics(account_id, cred, previous, state, run)
        finished_all = run.wait(deadline, self._clock, self._cancel)

        with self._lock:
            inflight = self._view()
            gathered = Gathered(
                started_at=started,
                owners=dict(state.owners),
                discovered=dict(state.discovered),
                lists=dict(state.lists),
                listed_at=dict(state.listed_at),
                due=dict(state.due),
                analytics=dict(state.analytics),
                must_start=frozenset(state.must_start),
                deferred=frozenset(n for n, binds in plan.binding.items() if binds),
                finished_at=self._clock(),
                finished_all=finished_all,
            )
        poll_seconds = (deadline - started) if deadline is not None else 0.0
        published = publish(
            previous,
            self._credentials,
            gathered,
            inflight,
            stall_seconds=RATE_WINDOW + 2 * max(0.0, poll_seconds),
        )
        with self._lock:
            for key in published.consumed:
                self._finished.pop(key, None)
        snapshot = published.snapshot
        for account_id in published.stalled:
            log.warning(
                "counts are not progressing (rate-limit block or a hung API?)",
                account_id=account_id,
            )
        self._log_summary(snapshot, gathered, inflight, started, requests_before)
        for name, binds in plan.binding.items():
            if binds:
                log.warning(
                    "the request budget cannot count every namespace each poll: "
                    "the largest are refreshed less often",
                    credential=name,
                    requests_needed=plan.requests_needed.get(name, 0),
                    budget_per_poll=self._sources[name].credential.budget_per_poll,
                    full_refresh_seconds=snapshot.full_refresh_seconds,
                )
        return snapshot

    def _requests_made(self) -> int:
        return sum(s.client.requests_made for s in self._sources.values())

    # -- tasks ---------------------------------------------------------------------------------

    def _discover_task(
        self, name: str, state: _PollState, plan: CountPlan, run: _Run
    ) -> Callable[[], None]:
        client = self._sources[name].client

        def task() -> None:
            with self._lock:
                if name in self._discovering:
                    return  # an earlier discovery still hangs: its answer will be used
                self._discovering.add(name)
            found: tuple[str, ...] | None = None
            try:
                found = tuple(account.id for account in client.list_accounts())
            except CloudflareAPIError:
                log.error(
                    "account discovery failed; polling the accounts known before",
                    credential=name,
                )
            finally:
                with self._lock:
                    self._discovering.discard(name)
                    if found is not None and not run.open:
                        self._late_discovery[name] = found  # the next poll starts from it
            if found is None or not run.open:
                return
            if not found:
                log.warning("the API token can read no account: nothing to export", credential=name)
            with self._lock:
                state.discovered[name] = found
                new = [a for a in found if a not in state.owners]
                for account_id in new:
                    state.owners[account_id] = name
            for account_id in new:
                self._control_pool.submit(run, self._list_task(account_id, name, state, plan, run))
                self._submit_analytics(account_id, name, None, state, run)

        return task

    def _submit_analytics(
        self,
        account_id: str,
        cred: str,
        previous: Snapshot | None,
        state: _PollState,
        run: _Run,
    ) -> None:
        """Queue the account's one usage query of this poll, when a window is due."""
        if self._analytics is None:
            return
        before = previous.analytics.get(account_id) if previous is not None else None
        with self._lock:
            if account_id in self._querying:
                return  # an earlier poll's query still runs; its answer is dropped
            window = analytics_due(
                before,
                self._clock(),
                self._analytics,
                self._denied.get(account_id),
                limits=self._limits.limits(account_id),
            )
        if window is not None:
            self._analytics_pool.submit(
                run, self._analytics_task(account_id, cred, window, state, run)
            )

    def _analytics_task(
        self, account_id: str, cred: str, window: Window, state: _PollState, run: _Run
    ) -> Callable[[], None]:
        client = self._sources[cred].client

        plan = self._analytics
        assert plan is not None

        send = graphql_sender(client, account_id)

        def query() -> AnalyticsAnswer:
            # The plan's limits (settings) at start-up and hourly; the defaults meanwhile.
            limits = self._limits.refresh(send, account_id, self._clock())
            if isinstance(limits, AnalyticsError):
                if limits.permission_denied:
                    return limits
                limits = self._limits.limits(account_id)
            retry = Retry(now=self._clock, wait=self._cancel.wait, deadline=self._deadline)
            return fetch_usage(
                send, account_id, window, limits=limits, top_objects=plan.top_objects,
                groups=plan.groups, retry=retry,
            )  # fmt: skip

        def task() -> None:
            answer: AnalyticsAnswer | None = None
            if window.seconds > 0:
                with self._lock:
                    if account_id in self._querying:
                        return
                    self._querying.add(account_id)
                try:
                    answer = query()
                except CloudflareAPIError as exc:
                    answer = AnalyticsError(
                        exc.kind, exc.args[0], codes=exc.error_codes, status=exc.status
                    )
                finally:
                    with self._lock:
                        self._querying.discard(account_id)
                self._note_analytics(account_id, answer)
            with self._lock:
                if run.open:
                    state.analytics[account_id] = (window, answer)

        return task

    def _note_analytics(self, account_id: str, answer: AnalyticsAnswer) -> None:
        if not isinstance(answer, AnalyticsError):
            with self._lock:
                self._denied.pop(account_id, None)
            return
        if answer.permission_denied:
            with self._lock:
                first = account_id not in self._denied
                self._denied[account_id] = self._clock()
            if first:
                log.warning(
                    "usage analytics off for this account: the token lacks the permission "
                    "Account Analytics: Read (asked again in an hour)",
                    account_id=account_id,
                )
            return
        log.warning(
            "usage analytics query failed; the last counted values stay",
            account_id=account_id,
            error_kind=answer.kind,
            error_codes=list(answer.codes),
            error=answer.message[:300],
            status=answer.status,
        )

    def _list_task(
        self, account_id: str, cred: str, state: _PollState, plan: CountPlan, run: _Run
    ) -> Callable[[], None]:
        client = self._sources[cred].client

        def task() -> None:
            with self._lock:
                if account_id in self._listing:
                    return  # an earlier list still hangs: this poll counts it as failed
                self._listing.add(account_id)
            namespaces: tuple[Namespace, ...] | None = None
            try:
                namespaces = tuple(client.list_namespaces(account_id))
            except CloudflareAPIError:
                pass
            finally:
                with self._lock:
                    self._listing.discard(account_id)
            with self._lock:
                if not run.open:
                    return  # too late for this poll; the next one lists again
                state.lists[account_id] = namespaces
                state.listed_at[account_id] = self._clock()
                if namespaces is None:
                    return
                due = counts_due(account_id, namespaces, self._walks, self._finished)
                state.due[account_id] = frozenset(ns.id for ns in due)
            for ns in due:
                order = plan.order(cred, (account_id, ns.id))
                if order.fresh_pages != 0:
                    with self._lock:
                        state.must_start.add((account_id, ns.id))
                pool = self._bulk_pool if order.fresh_pages == 0 else self._walk_pool
                pool.submit(
                    run,
                    self._count_task(account_id, ns.id, cred, order, state, run),
                    order.priority,
                )

        return task

    def _count_task(
        self,
        account_id: str,
        ns_id: str,
        cred: str,
        order: CountOrder,
        state: _PollState,
        run: _Run,
    ) -> Callable[[], None]:
        key = (account_id, ns_id)
        client = self._sources[cred].client

        def lane(pages: int) -> Lane:
            return lane_for(pages, order.fresh_pages)

        def progress(pages: int) -> None:
            if pages == 1 or pages % 16 == 0:  # follow the latency as answers come in
                self._walk_pool.resize(self.workers())
            with self._lock:
                walk = self._walks.get(key)
                if walk is not None:
                    self._walks[key] = replace(
                        walk, progressed_at=self._clock(), pages=pages, lane=lane(pages)
                    )

        def task() -> None:
            now = self._clock()
            with self._lock:
                if not run.open or key in self._walks or key in self._finished:
                    return
                self._walks[key] = WalkState(started_at=now, progressed_at=now, lane=lane(0))
            outcome: Outcome = None
            try:
                count = client.count_objects(
                    account_id, ns_id, progress, max_pages=order.max_pages, lane=lane
                )
                outcome = replace(count, completed_at=self._clock())
            except CloudflareAPIError as exc:
                if exc.not_found and NAMESPACE_NOT_FOUND in exc.codes:
                    outcome = GONE  # deleted between listing and counting
            finally:
                with self._lock:
                    del self._walks[key]
                    self._finished[key] = outcome
                    if run.open:
                        state.listed_at[account_id] = self._clock()

        return task

    def _log_summary(
        self,
        snapshot: Snapshot,
        gathered: Gathered,
        inflight: InFlight,
        started: float,
        requests_before: int,
    ) -> None:
        failed_accounts = [
            a.account_id for a in snapshot.accounts if gathered.lists.get(a.account_id) is None
        ]
        failed_namespaces = [
            f"{account_id}/{ns_id}"
            for (account_id, ns_id), outcome in inflight.finished.items()
            if outcome is None and account_id in gathered.lists
        ]
        fields: dict[str, object] = {
            "duration_seconds": round(self._clock() - started, 3),
            "requests": self._requests_made() - requests_before,
            "accounts": len(snapshot.accounts),
            "namespaces": sum(len(a.namespaces) for a in snapshot.accounts),
            "objects": sum(c.objects for a in snapshot.accounts for c in a.counts.values()),
            "objects_with_stored_data": sum(
                c.with_stored_data for a in snapshot.accounts for c in a.counts.values()
            ),
            "namespaces_gone": sum(1 for o in inflight.finished.values() if o == GONE),
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
