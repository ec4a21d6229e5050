"""The executor: carries out what :mod:`do_exporter.planner` decides, on threads, over HTTP.

A poll asks the planner what to start (:func:`~do_exporter.planner.poll_start`), runs
discovery and namespace lists on a pool of their own (never behind object walks; their
requests go first in the rate limiter's queue), applies the namespace filter to each list,
starts the walks it makes due in the planner's order, waits until everything ended or the
deadline came, and hands what its tasks delivered to :func:`~do_exporter.publish.publish`.
One way: a walk delivers a typed outcome (``Counted``, ``Gone``, ``Failed``) into the
mailbox; the poll's end drains it into the fold, which returns the next snapshot only.

Walks still running at the deadline carry on; their outcome joins a later poll, and work in
flight is never started twice: a huge namespace is spread over several intervals without
holding up the small ones. Mutable state lives in :class:`Poller` under one lock; every
decision about it is a pure function of a copy (:class:`~do_exporter.planner.InFlight`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field, replace

import structlog

from .analytics import (
    AnalyticsError,
    AnalyticsState,
    LimitsBook,
    Retry,
    Window,
    fetch_usage,
)
from .apifacts import RATE_LIMIT_WINDOW
from .clock import SYSTEM, Clock
from .cloudflare import CloudflareAPIError
from .model import (
    Counted,
    CountOutcome,
    Failed,
    Gone,
    Key,
    Listed,
    ListOutcome,
    Snapshot,
)
from .nsfilter import ALL, NamespaceFilter
from .planner import (
    AnalyticsPlan,
    CountOrder,
    CountPlan,
    Credential,
    InFlight,
    WalkState,
    analytics_due,
    counts_due,
    estimated_pages,
    lane_for,
    poll_start,
)
from .pollreport import analytics_outcome, report
from .pool import Pool, Run
from .publish import AnalyticsAnswer, Gathered, publish
from .ratelimit import Lane, RateLimiter
from .source import ApiClient, Source, as_clock, graphql_sender

log = structlog.get_logger("do_exporter.poller")

NAMESPACE_NOT_FOUND = 10066  # Cloudflare's code for an unknown namespace id (HTTP 404)
MIN_WORKERS = 4
CONTROL_WORKERS = 4  # threads for discovery and namespace lists, apart from the walks
BULK_WORKERS = 4  # threads for walks that queue in the BULK lane from their first page

__all__ = ["ApiClient", "Poller", "Source", "estimated_pages", "graphql_sender"]


@dataclass
class _PollState:
    """What one poll gathers (mutated by its tasks under the poller's lock)."""

    started_at: float
    owners: dict[str, str]
    discovered: dict[str, tuple[str, ...]]
    plan: CountPlan
    pending: Container[Key]  # outcomes the previous snapshot holds for a later list
    run: Run = field(default_factory=Run)
    lists: dict[str, ListOutcome] = field(default_factory=dict)
    listed_at: dict[str, float] = field(default_factory=dict)
    due: dict[str, frozenset[str]] = field(default_factory=dict)
    must_start: set[Key] = field(default_factory=set)
    analytics: dict[str, tuple[Window, AnalyticsAnswer | None]] = field(default_factory=dict)


def _reason(exc: CloudflareAPIError) -> str:
    return exc.kind if exc.status is None else f"{exc.kind} (HTTP {exc.status})"


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
    starts with 4 and grows as answers come in: a first poll never holds 64 bodies at once.

    ``namespace_filter`` drops namespaces after listing: no walk, no analytics row, no
    series for them (the account's namespace totals still count them). ``clock`` gives the
    Unix time of deadlines, walk progress and published timestamps.
    """

    def __init__(
        self,
        client: ApiClient | None = None,
        *,
        account_ids: Sequence[str] = (),
        max_workers: int = 32,
        budget_per_poll: float | None = None,
        burst_rate: float | None = None,
        limiter: RateLimiter | None = None,
        sources: Sequence[Source] = (),
        analytics: AnalyticsPlan | None = None,
        namespace_filter: NamespaceFilter = ALL,
        cancel: threading.Event | None = None,
        clock: Clock | Callable[[], float] = SYSTEM,
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
        self._filter = namespace_filter
        self._cancel = cancel or threading.Event()
        self._clock = as_clock(clock)
        self._walk_pool = Pool(self._cancel, "poll-worker")
        self._control_pool = Pool(self._cancel, "poll-control", CONTROL_WORKERS)
        # Usage queries apart from lists: a GraphQL 429 pause never holds up a list.
        self._analytics_pool = Pool(self._cancel, "poll-analytics", CONTROL_WORKERS)
        # Walks whose every page waits in the BULK lane, apart from the walk pool: threads
        # sleeping for the bulk share never keep the cheap counts of a later poll waiting.
        self._bulk_pool = Pool(self._cancel, "poll-bulk", BULK_WORKERS)
        self._lock = threading.Lock()
        self._walks: dict[Key, WalkState] = {}
        self._delivered: dict[Key, CountOutcome] = {}  # the mailbox the next poll drains
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

    def delivered(self) -> int:
        """Walk outcomes waiting for the next poll's end."""
        return len(self._delivered)  # one read of a dict: atomic

    def _view(self) -> InFlight:
        """A copy of what runs now (under the lock)."""
        return InFlight(
            discovering=frozenset(self._discovering),
            listing=frozenset(self._listing),
            walks=dict(self._walks),
        )

    # -- one poll -----------------------------------------------------------------------------

    def poll(self, previous: Snapshot, deadline: float | None = None) -> Snapshot:
        """Poll every account once; return the next snapshot (never raises API errors).

        ``deadline`` (Unix time on the poller's clock) bounds how long the poll waits; see
        the module docstring. Raises :class:`~do_exporter.ratelimit.Cancelled` on shutdown.
        """
        started = self._clock.time()
        self._deadline = deadline
        requests_before = self._requests_made()
        state = self._start(previous, started)
        finished_all = state.run.wait(deadline, self._clock, self._cancel)
        gathered = self._gather(state, finished_all)
        poll_seconds = (deadline - started) if deadline is not None else 0.0
        published = publish(
            previous,
            self._credentials,
            gathered,
            stall_seconds=RATE_LIMIT_WINDOW + 2 * max(0.0, poll_seconds),
        )
        report(
            published,
            gathered,
            state.plan,
            {name: s.credential.budget_per_poll for name, s in self._sources.items()},
            duration=self._clock.time() - started,
            requests=self._requests_made() - requests_before,
            walks_in_flight=self.inflight(),
        )
        return published.snapshot

    def _start(self, previous: Snapshot, started: float) -> _PollState:
        """Plan the poll and queue its first tasks: discoveries, lists, usage queries."""
        plan = CountPlan(previous, self._credentials)
        for name, source in self._sources.items():
            if source.limiter is not None:
                source.limiter.set_bulk_limit(plan.bulk_limit(name, source.limiter.requests))
        self._walk_pool.resize(self.workers())
        with self._lock:
            inflight = self._view()
            late, self._late_discovery = self._late_discovery, {}
        start = poll_start(previous, self._credentials, inflight, late)
        state = _PollState(started, dict(start.owners), dict(late), plan, previous.pending)
        for name in start.discover:
            self._control_pool.submit(state.run, self._discover_task(name, state))
        for account_id, cred in start.lists:
            self._control_pool.submit(state.run, self._list_task(account_id, cred, state))
        for account_id, cred in start.owners:
            self._submit_analytics(account_id, cred, previous.analytics.get(account_id), state)
        return state

    def _gather(self, state: _PollState, finished_all: bool) -> Gathered:
        """What the poll's tasks delivered; drains the mailbox (walks ending later join the
        next poll)."""
        with self._lock:
            delivered, self._delivered = self._delivered, {}
            return Gathered(
                started_at=state.started_at,
                owners=dict(state.owners),
                discovered=dict(state.discovered),
                lists=dict(state.lists),
                listed_at=dict(state.listed_at),
                due=dict(state.due),
                counts=delivered,
                walks=dict(self._walks),
                analytics=dict(state.analytics),
                must_start=frozenset(state.must_start),
                deferred=frozenset(n for n, binds in state.plan.binding.items() if binds),
                finished_at=self._clock.time(),
                finished_all=finished_all,
            )

    def _requests_made(self) -> int:
        return sum(s.client.requests_made for s in self._sources.values())

    # -- tasks ---------------------------------------------------------------------------------

    def _discover_task(self, name: str, state: _PollState) -> Callable[[], None]:
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
                    if found is not None and not state.run.open:
                        self._late_discovery[name] = found  # the next poll starts from it
            if found is None or not state.run.open:
                return
            if not found:
                log.warning("the API token can read no account: nothing to export", credential=name)
            with self._lock:
                state.discovered[name] = found
                new = [a for a in found if a not in state.owners]
                for account_id in new:
                    state.owners[account_id] = name
            for account_id in new:
                self._control_pool.submit(state.run, self._list_task(account_id, name, state))
                self._submit_analytics(account_id, name, None, state)

        return task

    def _submit_analytics(
        self, account_id: str, cred: str, before: AnalyticsState | None, state: _PollState
    ) -> None:
        """Queue the account's one usage query of this poll, when a window is due."""
        if self._analytics is None:
            return
        with self._lock:
            if account_id in self._querying:
                return  # an earlier poll's query still runs; its answer is dropped
            window = analytics_due(
                before,
                self._clock.time(),
                self._analytics,
                self._denied.get(account_id),
                limits=self._limits.limits(account_id),
            )
        if window is not None:
            self._analytics_pool.submit(
                state.run, self._analytics_task(account_id, cred, window, state)
            )

    def _analytics_task(
        self, account_id: str, cred: str, window: Window, state: _PollState
    ) -> Callable[[], None]:
        client, plan = self._sources[cred].client, self._analytics
        assert plan is not None

        send = graphql_sender(client, account_id)

        def query() -> AnalyticsAnswer:
            # The plan's limits (settings) at start-up and hourly; the defaults meanwhile.
            limits = self._limits.refresh(send, account_id, self._clock.time())
            if isinstance(limits, AnalyticsError):
                if limits.permission_denied:
                    return limits
                limits = self._limits.limits(account_id)
            retry = Retry(now=self._clock.time, wait=self._cancel.wait, deadline=self._deadline)
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
                if state.run.open:
                    state.analytics[account_id] = (window, answer)

        return task

    def _note_analytics(self, account_id: str, answer: AnalyticsAnswer) -> None:
        denied = isinstance(answer, AnalyticsError) and answer.permission_denied
        with self._lock:
            first = account_id not in self._denied
            if denied:
                self._denied[account_id] = self._clock.time()
            elif not isinstance(answer, AnalyticsError):
                self._denied.pop(account_id, None)
        analytics_outcome(account_id, answer, first_denial=first)

    def _list_task(self, account_id: str, cred: str, state: _PollState) -> Callable[[], None]:
        client = self._sources[cred].client

        def task() -> None:
            with self._lock:
                if account_id in self._listing:
                    return  # an earlier list still hangs: this poll counts it as failed
                self._listing.add(account_id)
            outcome: ListOutcome = Failed("interrupted")
            try:
                outcome = self._filter.listed(client.list_namespaces(account_id))
            except CloudflareAPIError as exc:
                outcome = Failed(_reason(exc))
            finally:
                with self._lock:
                    self._listing.discard(account_id)
            self._start_counts(account_id, cred, outcome, state)

        return task

    def _start_counts(
        self, account_id: str, cred: str, outcome: ListOutcome, state: _PollState
    ) -> None:
        """Record a list's outcome; queue the walks it makes due, in the planner's order."""
        with self._lock:
            if not state.run.open:
                return  # too late for this poll; the next one lists again
            state.lists[account_id] = outcome
            state.listed_at[account_id] = self._clock.time()
            if not isinstance(outcome, Listed):
                return
            busy = (self._walks, self._delivered, state.pending)
            due = counts_due(account_id, outcome.namespaces, *busy)
            state.due[account_id] = frozenset(ns.id for ns in due)
        fresh, bulk = state.plan.queue(cred, account_id, due)
        if fresh and any(state.plan.binding.values()):  # matters only for a binding plan
            with self._lock:
                state.must_start.update((account_id, ns_id) for ns_id in fresh)
        for pool, ids in ((self._walk_pool, fresh), (self._bulk_pool, bulk)):
            if ids:
                pool.submit_sorted(state.run, self._walks_of(account_id, cred, ids, state))

    def _walks_of(
        self, account_id: str, cred: str, ids: list[str], state: _PollState
    ) -> Iterator[tuple[float, _Walk]]:
        """An account's walks in the planner's order, made as the pool reaches them: a poll
        of 10,000 namespaces never holds 10,000 tasks."""
        client = self._sources[cred].client
        for ns_id in ids:
            key = (account_id, ns_id)
            order = state.plan.order(cred, key)
            yield order.priority, _Walk(self, key, client, order, state)

    def _walk(self, walk: _Walk) -> None:
        """Count one namespace (a walk task; see :class:`_Walk`)."""
        key, state, now = walk.key, walk.state, self._clock.time()
        with self._lock:
            if not state.run.open or key in self._walks or key in self._delivered:
                return
            self._walks[key] = WalkState(started_at=now, progressed_at=now, lane=walk.lane(0))
        outcome: CountOutcome = Failed("interrupted")
        try:
            count = walk.client.count_objects(
                *key, walk.progress, max_pages=walk.order.max_pages, lane=walk.lane
            )
            outcome = Counted(replace(count, completed_at=self._clock.time()))
        except CloudflareAPIError as exc:
            gone = exc.not_found and NAMESPACE_NOT_FOUND in exc.codes
            outcome = Gone() if gone else Failed(_reason(exc))  # Gone: deleted meanwhile
        finally:
            with self._lock:
                del self._walks[key]
                self._delivered[key] = outcome
                if state.run.open:
                    state.listed_at[key[0]] = self._clock.time()

    def _progressed(self, walk: _Walk, pages: int) -> None:
        if pages == 1 or pages % 16 == 0:  # follow the latency as answers come in
            self._walk_pool.resize(self.workers())
        with self._lock:
            running = self._walks.get(walk.key)
            if running is not None:
                self._walks[walk.key] = replace(
                    running, progressed_at=self._clock.time(), pages=pages, lane=walk.lane(pages)
                )


@dataclass(frozen=True, slots=True)
class _Walk:
    """One namespace's walk task (made when its pool reaches it: :meth:`Poller._walks_of`)."""

    poller: Poller
    key: Key
    client: ApiClient
    order: CountOrder
    state: _PollState

    def __call__(self) -> None:
        self.poller._walk(self)

    def lane(self, pages: int) -> Lane:
        return lane_for(pages, self.order.fresh_pages)

    def progress(self, pages: int) -> None:
        self.poller._progressed(self, pages)
