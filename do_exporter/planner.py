"""What a poll does and what it publishes, decided by pure functions.

The executor (:mod:`do_exporter.poller`) runs threads and HTTP requests; every decision it
carries out is made here, from immutable data and a ``now`` it is given:

- :func:`poll_start`: which credentials discover their accounts, which accounts are listed.
- :class:`CountPlan`: in which order namespaces are counted, in which :class:`Lane` each
  page of a walk queues, how many pages a walk may plausibly need, and how much of the
  budget long walks may take (so cheap namespaces stay fresh every interval).
- :func:`counts_due`: which namespaces of a freshly listed account start a walk.
- :func:`publish`: the next :class:`Snapshot`, from the previous one and what the poll
  gathered.

An account disappears only when a complete ``GET /accounts`` answer of the credential that
polls it no longer has it, never because an answer is late or failed. Nothing here takes a
lock, sleeps or reads a clock, so tests assert on plans directly.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from .analytics import (
    DEFAULT_LIMITS,
    DEFAULT_TOP_OBJECTS,
    AccountUsage,
    AnalyticsError,
    AnalyticsState,
    NodeLimits,
    Window,
    advance,
    forget,
    known_namespaces,
    next_window,
    record_failure,
    skip,
)
from .config import Credential  # the one credential type, resolved by the config
from .metrics.groups import GROUPS
from .model import (
    GONE,
    AccountPoll,
    AccountSnapshot,
    Namespace,
    ObjectCount,
    Snapshot,
    next_account,
)
from .ratelimit import Lane

Key = tuple[str, str]  # (account id, namespace id)
Outcome = ObjectCount | str | None  # a count, GONE, or None for a failure

OBJECTS_PER_PAGE = 10_000  # the API's maximum page size, asked for by every walk
FRESH_SHARE = 0.5  # share of an interval's budget kept for the cheapest namespaces
RESERVE_MARGIN = 1.25  # head-room on what cheap namespaces and lists need per window
# A walk may read this many times the pages its namespace last needed, plus GROWTH_PAGES,
# before it is judged endless (a server repeating fresh cursors): 1,000 pages is 10 million
# objects of growth between two counts.
GROWTH_FACTOR = 4
GROWTH_PAGES = 1_000
MAX_WALK_PAGES = 100_000  # first walk of a namespace of unknown size: 1 billion objects


def _frozen() -> Mapping[Key, Outcome]:
    return MappingProxyType({})


def estimated_pages(objects: int | None) -> int:
    """Requests a walk over a namespace of that many objects costs (unknown: one)."""
    return max(1, math.ceil((objects or 0) / OBJECTS_PER_PAGE))


def walk_page_limit(objects: int | None) -> int:
    """Most pages a walk over a namespace last counted at ``objects`` may read."""
    if objects is None:
        return MAX_WALK_PAGES
    pages = estimated_pages(objects)
    return min(MAX_WALK_PAGES, max(GROWTH_FACTOR * pages, pages + GROWTH_PAGES))


# -- what is in flight --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WalkState:
    """A walk the executor is running, as it last reported it."""

    started_at: float
    progressed_at: float  # when its last page arrived (its start before the first)
    pages: int = 0
    lane: Lane = Lane.FRESH  # the lane of its next page


@dataclass(frozen=True, slots=True)
class InFlight:
    """What the executor is doing at one moment (a copy; never changes)."""

    discovering: frozenset[str] = frozenset()  # credentials whose GET /accounts runs
    listing: frozenset[str] = frozenset()  # accounts whose namespace list runs
    walks: Mapping[Key, WalkState] = field(default_factory=lambda: MappingProxyType({}))
    finished: Mapping[Key, Outcome] = field(default_factory=_frozen)  # not yet published


# -- the start of a poll --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PollStart:
    discover: tuple[str, ...]  # credentials to run GET /accounts for
    owners: tuple[tuple[str, str], ...]  # (account id, credential) the poll starts with
    lists: tuple[tuple[str, str], ...]  # of those, the ones to list now


def poll_start(
    previous: Snapshot,
    credentials: Sequence[Credential],
    inflight: InFlight,
    discovered: Mapping[str, tuple[str, ...]] | None = None,
) -> PollStart:
    """What a poll starts with, before any answer has come back.

    Configured accounts are listed at once; a discovering credential lists the accounts it
    polled last time (and any a late ``GET /accounts`` answer found) while its discovery
    runs, so a slow or failing discovery never holds up, or empties, the poll. Work still in
    flight from an earlier poll is not started twice.
    """
    discovered = discovered or {}
    owners = assign_accounts(previous, credentials, discovered)
    lists = tuple(
        (account_id, owner)
        for account_id, owner in owners.items()
        if account_id not in inflight.listing
    )
    discover = tuple(
        c.name for c in credentials if c.discovers and c.name not in inflight.discovering
    )
    return PollStart(discover=discover, owners=tuple(owners.items()), lists=lists)


def assign_accounts(
    previous: Snapshot,
    credentials: Sequence[Credential],
    discovered: Mapping[str, tuple[str, ...]],
) -> dict[str, str]:
    """Each account to poll, with the one credential that polls it (insertion ordered).

    An account keeps the credential that polled it before while that credential still
    reaches it; otherwise the first credential (in configuration order) that lists it. A
    credential's account list is what it was configured with, else its latest complete
    discovery answer, else the accounts it polled in the previous snapshot.
    """
    owned_before: dict[str, list[str]] = {}
    for account in previous.accounts:
        owned_before.setdefault(account.credential, []).append(account.account_id)
    reach: dict[str, tuple[str, ...]] = {}
    for c in credentials:
        if c.account_ids:
            reach[c.name] = c.account_ids
        elif c.name in discovered:
            reach[c.name] = discovered[c.name]
        else:
            reach[c.name] = tuple(owned_before.get(c.name, ()))
    owners: dict[str, str] = {}
    for account in previous.accounts:  # stickiness: no account hops between credentials
        if account.account_id in reach.get(account.credential, ()):
            owners[account.account_id] = account.credential
    for c in credentials:
        for account_id in reach[c.name]:
            owners.setdefault(account_id, c.name)
    return owners


# -- counting ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CountOrder:
    """How one namespace is counted in this poll."""

    priority: float  # lower first, across every account of the credential
    max_pages: int  # more is an endless walk
    fresh_pages: int | None = None  # pages in the FRESH lane, the rest BULK (None: all)


class CountPlan:
    """One poll's counting policy, from what the previous snapshot knew (linear time).

    When a credential's known counts fit its budget per poll, the longest walks start first
    (their sequential cursor walks bound the poll). When they do not (the plan *binds*),
    the cheapest namespaces come first, up to ``FRESH_SHARE`` of the budget, so they stay
    fresh every interval; then the rest, stalest first.

    A walk of a namespace not known to be large may take at most ``FRESH_SHARE`` of an
    interval's budget in the ``FRESH`` lane; its further pages, and every page of a known
    large namespace outside the cheap set when the plan binds, queue in the ``BULK`` lane,
    which gets what the window has left once the cheap namespaces and the lists of every
    interval of the window are provided for (:meth:`bulk_limit`). So a namespace of 20
    million objects is counted over several intervals without ever starving the small ones.
    """

    def __init__(self, previous: Snapshot, credentials: Sequence[Credential]) -> None:
        self._credentials = {c.name: c for c in credentials}
        self._index: dict[Key, tuple[int | None, float]] = {}
        needed: dict[str, int] = {}
        lists: dict[str, int] = {}
        sizes: dict[str, list[tuple[int, Key]]] = {}
        for account in previous.accounts:
            cred = account.credential
            lists[cred] = lists.get(cred, 0) + 1 + len(account.namespaces) // 1000
            for ns in account.namespaces:
                count = account.counts.get(ns.id)
                objects = count.objects if count is not None else None
                key = (account.account_id, ns.id)
                self._index[key] = (objects, count.completed_at if count is not None else 0.0)
                pages = estimated_pages(objects)
                needed[cred] = needed.get(cred, 0) + pages
                sizes.setdefault(cred, []).append((pages, key))
        self.requests_needed = needed
        self.binding: dict[str, bool] = {}
        self.cheap_requests: dict[str, int] = {}
        self._cheap: set[Key] = set()
        for c in credentials:
            budget = c.budget_per_poll
            binding = budget is not None and needed.get(c.name, 0) > budget
            self.binding[c.name] = binding
            spent = 0
            if binding and budget is not None:
                for pages, key in sorted(sizes.get(c.name, ()), key=lambda s: s[0]):
                    if spent + pages > budget * FRESH_SHARE:
                        break
                    spent += pages
                    self._cheap.add(key)
            else:
                spent = needed.get(c.name, 0)
            self.cheap_requests[c.name] = spent + lists.get(c.name, 0)

    def order(self, credential: str, key: Key) -> CountOrder:
        objects, completed_at = self._index.get(key, (None, 0.0))
        pages = estimated_pages(objects)
        fresh = self.fresh_pages(credential)
        if not self.binding.get(credential, False):
            priority = -float(pages)  # longest walks first
        elif key in self._cheap or objects is None:
            priority = float(pages) - 1e12  # cheap (or never counted) first, cheapest first
        else:
            priority = completed_at  # then the stalest
            fresh = 0  # a known large walk: every page waits for what the cheap ones leave
        return CountOrder(priority=priority, max_pages=walk_page_limit(objects), fresh_pages=fresh)

    def fresh_pages(self, credential: str) -> int | None:
        """Most pages one walk reads in the ``FRESH`` lane (None: no budget to plan for):
        half of what one interval (at most one rate-limit window) allows."""
        c = self._credentials.get(credential)
        if c is None or c.budget_per_poll is None:
            return None
        per_window = c.budget_per_poll * c.window_polls
        return max(1, math.floor(min(c.budget_per_poll, per_window) * FRESH_SHARE))

    def bulk_limit(self, credential: str, window_budget: int) -> int:
        """Most ``BULK`` pages in any window: what the cheap namespaces and lists leave.

        What they need in every interval of the window is kept for them (with a margin, at
        most ``FRESH_SHARE`` of the window), and so is the ``FRESH`` allowance of one walk of
        a namespace not counted before; long walks always keep at least the other half.
        """
        c = self._credentials.get(credential)
        fresh = self.fresh_pages(credential)
        if c is None or c.budget_per_poll is None or fresh is None:
            return window_budget
        kept = self.cheap_requests.get(credential, 0) * max(1.0, c.window_polls) * RESERVE_MARGIN
        kept = min(kept, window_budget * FRESH_SHARE)
        floor = math.ceil(window_budget * (1 - FRESH_SHARE))
        return max(floor, min(window_budget, window_budget - math.ceil(kept) - fresh))


def lane_for(pages_read: int, fresh_pages: int | None) -> Lane:
    """The lane of a walk's next page."""
    return Lane.FRESH if fresh_pages is None or pages_read < fresh_pages else Lane.BULK


def counts_due(
    account_id: str,
    namespaces: Iterable[Namespace],
    walking: Container[Key],
    finished: Container[Key],
) -> list[Namespace]:
    """Namespaces of a freshly listed account whose walk starts now.

    A walk still running (in ``walking``), or finished but not yet published (in
    ``finished``), is not started again.
    """
    return [
        ns
        for ns in namespaces
        if (key := (account_id, ns.id)) not in walking and key not in finished
    ]


# -- analytics -------------------------------------------------------------------------------

AnalyticsAnswer = AccountUsage | AnalyticsError


@dataclass(frozen=True, slots=True)
class AnalyticsPlan:
    """How usage analytics are polled: whole closed minutes older than ``delay``; the first
    window is the last ``interval`` of them; a denied account is asked again after
    ``retry_denied`` seconds; ``top_objects`` busiest objects per account (0: none) and the
    families ``groups`` on shape the query."""

    delay: float
    interval: float
    retry_denied: float = 3600.0
    top_objects: int = DEFAULT_TOP_OBJECTS
    groups: frozenset[str] = frozenset(GROUPS)


def analytics_window(
    state: AnalyticsState | None,
    now: float,
    plan: AnalyticsPlan,
    *,
    limits: NodeLimits = DEFAULT_LIMITS,
) -> Window | None:
    """The window an account's query asks for now (None: no new closed minute)."""
    watermark = state.watermark if state is not None else None
    return next_window(watermark, now, delay=plan.delay, interval=plan.interval, limits=limits)


def analytics_due(
    state: AnalyticsState | None,
    now: float,
    plan: AnalyticsPlan,
    denied_at: float | None,
    *,
    limits: NodeLimits = DEFAULT_LIMITS,
) -> Window | None:
    """The window to ask for, unless the token was refused the permission lately."""
    if denied_at is not None and now - denied_at < plan.retry_denied:
        return None
    return analytics_window(state, now, plan, limits=limits)


def next_analytics(
    previous: AnalyticsState | None,
    account_id: str,
    answer: tuple[Window, AnalyticsAnswer | None] | None,
    *,
    now: float,
    namespace_ids: frozenset[str] | None,
) -> AnalyticsState | None:
    """One account's analytics after a poll (pure).

    A complete answer for a window that continues the watermark is counted; an error (or no
    answer in time: ``None``) is recorded and counts nothing, so the next poll asks for the
    same minutes and more; a window nothing of which can be asked any more is skipped.
    Namespaces gone from a fresh namespace list lose their series.
    """
    state = previous
    if answer is not None:
        window, result = answer
        state = state or AnalyticsState(account_id)
        if window.seconds == 0:
            state = skip(state, window)
        elif isinstance(result, AccountUsage):
            continues = state.watermark is None or window.start - window.skipped == state.watermark
            state = advance(state, window, result, now=now) if continues else state
        else:
            denied = result is not None and result.permission_denied
            state = record_failure(state, result, denied=denied)
    if state is not None and namespace_ids is not None:
        known = known_namespaces(state)
        state = forget(state, [ns for ns in known if ns not in namespace_ids])
    return state


# -- publishing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Gathered:
    """What one poll learnt, handed to :func:`publish` when it ends."""

    started_at: float
    owners: Mapping[str, str]  # account -> credential, as the poll started (or grew) it
    discovered: Mapping[str, tuple[str, ...]]  # credential -> complete GET /accounts answer
    lists: Mapping[str, tuple[Namespace, ...] | None]  # None: the list failed
    listed_at: Mapping[str, float]  # account -> when its list (or its last count) ended
    due: Mapping[str, frozenset[str]]  # account -> namespaces whose walk was to start
    deferred: frozenset[str] = frozenset()  # credentials whose plan binds (counts may wait)
    finished_at: float = 0.0
    finished_all: bool = True  # every task of the poll ended before its deadline
    # due counts that must start even when the plan binds (the cheap ones, new ones)
    must_start: frozenset[Key] = frozenset()
    # account -> the window asked for and its answer (None: no answer by the deadline)
    analytics: Mapping[str, tuple[Window, AnalyticsAnswer | None]] = field(
        default_factory=lambda: MappingProxyType({})
    )


@dataclass(frozen=True, slots=True)
class Published:
    snapshot: Snapshot
    consumed: frozenset[Key]  # finished walks now in the snapshot (or dropped for good)
    stalled: tuple[str, ...] = ()  # accounts whose due counts neither ended nor moved


def publish(
    previous: Snapshot,
    credentials: Sequence[Credential],
    gathered: Gathered,
    inflight: InFlight,
    *,
    stall_seconds: float,
) -> Published:
    """The next snapshot (pure): the staleness policy (docs/architecture.md) plus the account rule.

    - Accounts: the credential's complete discovery answer decides which stay; without one
      (late, failed), every account polled before stays, marked failed if not listed.
    - An account whose list failed or did not end keeps its state (``last_poll_success 0``);
      its finished walks wait for a poll that lists it.
    - A walk is stalled when it read no page since the poll began, unless its pages queue in
      the ``BULK`` lane (held back on purpose) and one came within ``stall_seconds``; and
      when it has run longer than ``stall_seconds`` over a namespace that has no count yet
      (no series at all: the poll must not look healthy). A due count that could not start
      fails the poll unless the credential's plan binds.
    """
    by_name = {c.name: c for c in credentials}
    keep_order: dict[str, str] = {}
    candidates = [
        (a.account_id, gathered.owners.get(a.account_id, a.credential)) for a in previous.accounts
    ]
    for account_id, cred in [*candidates, *gathered.owners.items()]:
        c = by_name.get(cred)
        if c is None:
            continue  # its credential is no longer configured
        answer = gathered.discovered.get(cred)
        if answer is not None and account_id not in answer and account_id not in c.account_ids:
            # Its credential's complete answer lacks it: another credential that reaches it
            # takes it over (series and analytics kept); else the account is gone.
            other = next(
                (
                    o.name
                    for o in credentials
                    if o.name != cred
                    and (
                        account_id in o.account_ids
                        or account_id in gathered.discovered.get(o.name, ())
                    )
                ),
                None,
            )
            if other is None:
                continue
            cred = other
        keep_order.setdefault(account_id, cred)

    consumed: set[Key] = set()
    finished_by_account: dict[str, dict[str, Outcome]] = {}
    for (account_id, ns_id), outcome in inflight.finished.items():
        finished_by_account.setdefault(account_id, {})[ns_id] = outcome
        if account_id not in keep_order:
            consumed.add((account_id, ns_id))  # its account is gone

    accounts: list[AccountSnapshot] = []
    analytics: dict[str, AnalyticsState] = {}
    stalled_accounts: list[str] = []
    now = gathered.finished_at
    for account_id, cred in keep_order.items():
        before = previous.account(account_id)
        namespaces = gathered.lists.get(account_id)
        listed = account_id in gathered.lists and namespaces is not None
        counts: dict[str, Outcome] = {}
        stalled = False
        if listed and namespaces is not None:
            finished = finished_by_account.get(account_id, {})
            listed_ids = {ns.id for ns in namespaces}
            for ns_id, outcome in finished.items():
                consumed.add((account_id, ns_id))
                if ns_id in listed_ids:
                    counts[ns_id] = outcome
            due = gathered.due.get(account_id, frozenset())
            for ns in namespaces:
                if ns.id in counts:
                    continue
                walk = inflight.walks.get((account_id, ns.id))
                if walk is not None:
                    if walk.pages == 0 or walk.progressed_at < gathered.started_at:
                        held_on_purpose = (
                            walk.lane is Lane.BULK and now - walk.progressed_at <= stall_seconds
                        )
                        stalled |= not held_on_purpose
                    never_counted = before is None or ns.id not in before.counts
                    if never_counted and now - walk.started_at > stall_seconds:
                        # No series at all for that long: say so (an endless cursor on a
                        # new namespace, or a first walk far beyond the budget).
                        stalled = True
                elif ns.id in due and (
                    cred not in gathered.deferred or (account_id, ns.id) in gathered.must_start
                ):
                    stalled = True  # due, never started, and not deferred on purpose
        if stalled:
            stalled_accounts.append(account_id)
        poll = AccountPoll(
            account_id=account_id,
            started_at=gathered.started_at,
            finished_at=gathered.listed_at.get(account_id, now),
            namespaces=namespaces if listed else None,
            counts=counts,
            incomplete=stalled,
        )
        accounts.append(next_account(before, poll, credential=cred))
        usage = next_analytics(
            previous.analytics.get(account_id),
            account_id,
            gathered.analytics.get(account_id),
            now=now,
            namespace_ids=(
                frozenset(ns.id for ns in namespaces) if listed and namespaces is not None else None
            ),
        )
        if usage is not None:
            analytics[account_id] = usage

    discovery_complete = all(c.name in gathered.discovered for c in credentials if c.discovers)
    complete = (
        discovery_complete
        and gathered.finished_all
        and all(a.last_poll_success for a in accounts)
        and not any(key[0] in keep_order for key in inflight.walks)
    )
    snapshot = Snapshot(
        accounts=tuple(accounts),
        generation=previous.generation + 1,
        full_refresh_seconds=full_refresh(accounts),
        complete=complete,
        analytics=MappingProxyType(analytics),
    )
    return Published(snapshot, frozenset(consumed), tuple(stalled_accounts))


def full_refresh(accounts: Iterable[AccountSnapshot]) -> float | None:
    """Seconds between the last two complete counts of the slowest-refreshed namespace."""
    periods = [
        count.refresh_seconds
        for account in accounts
        for count in account.counts.values()
        if count.refresh_seconds is not None
    ]
    return max(periods) if periods else None


__all__ = [
    "GONE",
    "CountOrder",
    "CountPlan",
    "Credential",
    "Gathered",
    "InFlight",
    "Key",
    "Outcome",
    "PollStart",
    "Published",
    "WalkState",
    "assign_accounts",
    "counts_due",
    "estimated_pages",
    "full_refresh",
    "lane_for",
    "poll_start",
    "publish",
    "walk_page_limit",
]
