"""What a poll does, decided by pure functions (what it publishes: :mod:`.publish`).

The executor (:mod:`do_exporter.poller`) runs threads and HTTP requests; every decision it
carries out is made here, from immutable data and a ``now`` it is given:

- :func:`poll_start`: which credentials discover their accounts, which accounts are listed.
- :class:`CountPlan`: in which order namespaces are counted, in which :class:`Lane` each
  page of a walk queues, how many pages a walk may plausibly need, and how much of the
  budget long walks may take (so cheap namespaces stay fresh every interval).
- :func:`counts_due`: which namespaces of a freshly listed account start a walk.
- :func:`analytics_due`: which usage window an account's query asks for.

Nothing here takes a lock, sleeps or reads a clock, so tests assert on plans directly; every
step is linear in accounts and namespaces (sets and dicts, no scans of tuples).
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from .analytics import (
    DEFAULT_LIMITS,
    DEFAULT_TOP_OBJECTS,
    AnalyticsState,
    NodeLimits,
    Window,
    next_window,
)
from .apifacts import OBJECTS_PER_PAGE, RATE_LIMIT_WINDOW
from .config import Credential  # the one credential type, resolved by the config
from .metrics.groups import GROUPS
from .model import Key, Namespace, Snapshot
from .ratelimit import Lane

FRESH_SHARE = 0.5  # share of an interval's budget kept for the cheapest namespaces
RESERVE_MARGIN = 1.25  # head-room on what cheap namespaces and lists need per window
# A walk may read this many times the pages its namespace last needed, plus GROWTH_PAGES,
# before it is judged endless (a server repeating fresh cursors): 1,000 pages is 10 million
# objects of growth between two counts.
GROWTH_FACTOR = 4
GROWTH_PAGES = 1_000
MAX_WALK_PAGES = 100_000  # no walk reads more: 1 billion objects
# A first walk (a namespace with no count yet) may read what its credential's budget allows
# in this long: a cursor that never ends fails then, not after MAX_WALK_PAGES.
FIRST_WALK_SECONDS = 3600.0


def estimated_pages(objects: int | None) -> int:
    """Requests a walk over a namespace of that many objects costs (unknown: one)."""
    return max(1, math.ceil((objects or 0) / OBJECTS_PER_PAGE))


def walk_page_limit(objects: int | None, first_walk: int = MAX_WALK_PAGES) -> int:
    """Most pages a walk over a namespace last counted at ``objects`` may read
    (``first_walk``: the bound of a namespace not counted yet, :func:`first_walk_limit`)."""
    if objects is None:
        return min(MAX_WALK_PAGES, first_walk)
    pages = estimated_pages(objects)
    return min(MAX_WALK_PAGES, max(GROWTH_FACTOR * pages, pages + GROWTH_PAGES))


def first_walk_limit(budget_per_poll: float | None, window_polls: float) -> int:
    """Most pages a first walk may read: what the budget allows in ``FIRST_WALK_SECONDS``
    (12 rate windows: 12,000 pages, 120 million objects, at the default 1,000 requests per
    5 minutes),
    at most ``MAX_WALK_PAGES``; no budget: ``MAX_WALK_PAGES``."""
    if budget_per_poll is None:
        return MAX_WALK_PAGES
    per_window = budget_per_poll * window_polls
    pages = math.floor(per_window * FIRST_WALK_SECONDS / RATE_LIMIT_WINDOW)
    return min(MAX_WALK_PAGES, max(1, pages))


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
    reachable = {name: frozenset(ids) for name, ids in reach.items()}  # no tuple scans
    owners: dict[str, str] = {}
    for account in previous.accounts:  # stickiness: no account hops between credentials
        if account.account_id in reachable.get(account.credential, ()):
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
        self._first_walk = {
            c.name: first_walk_limit(c.budget_per_poll, c.window_polls) for c in credentials
        }
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
        first = self._first_walk.get(credential, MAX_WALK_PAGES)
        return CountOrder(priority, walk_page_limit(objects, first), fresh_pages=fresh)

    def queue(
        self, credential: str, account_id: str, due: Iterable[Namespace]
    ) -> tuple[list[str], list[str]]:
        """An account's due walks in the order they start (by :meth:`order`'s priority),
        split: those with pages in the ``FRESH`` lane, and those whose every page is
        ``BULK`` (which run on threads of their own)."""
        fresh: list[tuple[float, str]] = []
        bulk: list[tuple[float, str]] = []
        for ns in due:
            order = self.order(credential, (account_id, ns.id))
            (bulk if order.fresh_pages == 0 else fresh).append((order.priority, ns.id))
        fresh.sort(key=lambda walk: walk[0])
        bulk.sort(key=lambda walk: walk[0])
        return [ns_id for _, ns_id in fresh], [ns_id for _, ns_id in bulk]

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
    account_id: str, namespaces: Iterable[Namespace], *busy: Container[Key]
) -> list[Namespace]:
    """Namespaces of a freshly listed account whose walk starts now.

    A walk still running, or finished but not yet published (each a container of ``busy``:
    the walks, the outcomes delivered, those the snapshot holds for a later list), is not
    started again.
    """
    return [ns for ns in namespaces if not any((account_id, ns.id) in b for b in busy)]


# -- analytics -------------------------------------------------------------------------------


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


__all__ = [
    "AnalyticsPlan",
    "CountOrder",
    "CountPlan",
    "Credential",
    "InFlight",
    "Key",
    "PollStart",
    "WalkState",
    "analytics_due",
    "analytics_window",
    "assign_accounts",
    "counts_due",
    "estimated_pages",
    "first_walk_limit",
    "lane_for",
    "poll_start",
    "walk_page_limit",
]
