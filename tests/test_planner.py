"""The planner: what a poll starts, in which order it counts, what it publishes (pure).

No thread, socket or sleep here: every decision is asserted on the plan a function returns,
and the one test about time drives a :class:`RateLimiter` on a fake clock.
"""

from __future__ import annotations

from types import MappingProxyType

from do_exporter.model import (
    AccountSnapshot,
    Namespace,
    NamespaceCount,
    Snapshot,
)
from do_exporter.planner import (
    CountPlan,
    Credential,
    InFlight,
    assign_accounts,
    counts_due,
    estimated_pages,
    first_walk_limit,
    lane_for,
    poll_start,
    walk_page_limit,
)
from do_exporter.ratelimit import Lane, RateLimiter

A, B, C = "a" * 32, "b" * 32, "c" * 32
DISCOVER = Credential("default")


def account(
    account_id: str,
    sizes: dict[str, int],
    *,
    completed: dict[str, float] | None = None,
    credential: str = "default",
    extra: tuple[str, ...] = (),
) -> AccountSnapshot:
    completed = completed or {}
    return AccountSnapshot(
        account_id=account_id,
        namespaces=tuple(Namespace(n) for n in [*sizes, *extra]),
        counts=MappingProxyType(
            {n: NamespaceCount(size, 0, completed.get(n, 100.0)) for n, size in sizes.items()}
        ),
        last_poll_success=True,
        polls_success=3,
        namespaces_listed=True,
        credential=credential,
    )


def snapshot(*accounts: AccountSnapshot) -> Snapshot:
    return Snapshot(accounts=accounts, generation=5, complete=True)


# -- sizes ------------------------------------------------------------------------------------


def test_estimated_pages() -> None:
    assert [estimated_pages(n) for n in (None, 0, 1, 10_000, 10_001)] == [1, 1, 1, 1, 2]


def test_walk_page_limit_follows_the_last_known_size() -> None:
    """An endless cursor on a known namespace fails after plausible growth, not 100,000 pages."""
    assert walk_page_limit(None) == 100_000
    assert walk_page_limit(50_000) == 5 + 1_000
    assert walk_page_limit(20_000_000) == 8_000  # four times its 2,000 pages
    assert walk_page_limit(10**12) == 100_000


def test_a_first_walk_is_bounded_by_an_hour_of_its_budget() -> None:
    """No count yet: an endless cursor fails after the pages an hour of budget allows.

    At the default 1,000 requests per 5 minutes (any interval), 12,000 pages (120 million
    objects); without a budget, or at a huge one, the global bound of 100,000 pages.
    """
    assert first_walk_limit(1000 * 60 / 300, window_polls=300 / 60) == 12_000
    assert first_walk_limit(1000 * 30 / 300, window_polls=300 / 30) == 12_000
    assert first_walk_limit(None, window_polls=1.0) == 100_000
    assert first_walk_limit(10**6, window_polls=5) == 100_000
    previous = snapshot(account(A, {"known": 50_000}, extra=("new",)))
    plan = CountPlan(previous, [Credential("default", budget_per_poll=200, window_polls=5)])
    assert plan.order("default", (A, "new")).max_pages == 12_000
    assert plan.order("default", (A, "known")).max_pages == 5 + 1_000  # growth bound


# -- the start of a poll ----------------------------------------------------------------------


def test_discovery_never_holds_up_the_known_accounts() -> None:
    """While GET /accounts runs, the accounts polled last time are listed at once."""
    previous = snapshot(account(A, {"n": 1}), account(B, {"m": 1}))
    start = poll_start(previous, [DISCOVER], InFlight())
    assert start.discover == ("default",)
    assert start.lists == ((A, "default"), (B, "default"))


def test_work_in_flight_is_not_started_twice() -> None:
    """A discovery or list still running from an earlier poll is not started again."""
    previous = snapshot(account(A, {"n": 1}), account(B, {"m": 1}))
    start = poll_start(
        previous, [DISCOVER], InFlight(discovering=frozenset({"default"}), listing=frozenset({A}))
    )
    assert start.discover == ()
    assert start.lists == ((B, "default"),)
    assert dict(start.owners) == {A: "default", B: "default"}  # A stays in the poll


def test_a_late_discovery_answer_is_used_by_the_next_poll() -> None:
    """An answer that came after its poll's deadline decides the next poll's accounts."""
    previous = snapshot(account(A, {"n": 1}))
    start = poll_start(previous, [DISCOVER], InFlight(), {"default": (B,)})
    assert start.lists == ((B, "default"),)


def test_configured_accounts_are_listed_without_discovery() -> None:
    start = poll_start(Snapshot(), [Credential("default", (A, B))], InFlight())
    assert start.discover == () and start.lists == ((A, "default"), (B, "default"))


def test_an_account_two_credentials_reach_is_polled_once() -> None:
    """The first credential (in configuration order) that reaches an account polls it."""
    creds = [Credential("one", (A, B)), Credential("two", (B, C))]
    assert assign_accounts(Snapshot(), creds, {}) == {A: "one", B: "one", C: "two"}


def test_an_account_keeps_its_credential_while_it_reaches_it() -> None:
    """No hopping: the credential that polled an account keeps it while it still can."""
    previous = snapshot(account(B, {"n": 1}, credential="two"))
    creds = [Credential("one", (A, B)), Credential("two", (B, C))]
    assert assign_accounts(previous, creds, {})[B] == "two"
    creds = [Credential("one", (A, B)), Credential("two", (C,))]
    assert assign_accounts(previous, creds, {})[B] == "one"


def test_counts_due_skip_walks_running_or_waiting_to_be_published() -> None:
    nss = [Namespace("x"), Namespace("y"), Namespace("z")]
    walking, delivered, pending = {(A, "x")}, {(A, "y")}, {(A, "z")}
    assert [ns.id for ns in counts_due(A, nss, walking, delivered)] == ["z"]
    assert counts_due(A, nss, walking, delivered, pending) == []


# -- the order of counts ---------------------------------------------------------------------


def order(plan: CountPlan, names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: plan.order("default", (A, n)).priority)


def test_budget_that_fits_walks_the_largest_first() -> None:
    """When everything fits, the longest cursor walks start first (they bound the poll)."""
    previous = snapshot(account(A, {"small": 5, "huge": 500_000, "mid": 50_000}, extra=("new",)))
    plan = CountPlan(previous, [Credential("default", budget_per_poll=1000)])
    assert not plan.binding["default"]
    assert order(plan, ["small", "mid", "huge", "new"]) == ["huge", "mid", "small", "new"]


def test_binding_budget_counts_cheap_namespaces_first_then_the_stalest() -> None:
    """When the budget binds, cheap namespaces come first; large ones by staleness."""
    previous = snapshot(
        account(
            A,
            {"a": 5, "b": 15_000, "big1": 900_000, "big2": 800_000},
            completed={"big1": 500.0, "big2": 200.0},
            extra=("new",),
        )
    )
    plan = CountPlan(previous, [Credential("default", budget_per_poll=20)])
    assert plan.binding["default"]
    assert order(plan, ["big1", "big2", "b", "a", "new"]) == ["a", "new", "b", "big2", "big1"]
    # Queued: the known large walks apart (every page BULK, on threads of their own).
    due = [Namespace(n) for n in ["big1", "big2", "b", "a", "new"]]
    assert plan.queue("default", A, due) == (["a", "new", "b"], ["big2", "big1"])


def test_planning_is_linear_in_the_namespaces() -> None:
    """5,000 accounts x 20 namespaces: one pass to index, constant time per order."""
    accounts = [account(f"{i:032x}", {f"n{j}": j * 100 for j in range(20)}) for i in range(5000)]
    previous = snapshot(*accounts)
    plan = CountPlan(previous, [Credential("default", budget_per_poll=1000)])
    assert plan.requests_needed["default"] == 5000 * 20
    assert plan.order("default", (f"{4999:032x}", "n19")).max_pages == walk_page_limit(1_900)
    assert previous.account(f"{4999:032x}") is accounts[-1]  # indexed, not scanned


def test_lanes_cap_a_walk_at_half_an_interval_budget() -> None:
    """A walk's first pages are FRESH; beyond half the interval's budget they go BULK."""
    plan = CountPlan(Snapshot(), [Credential("default", budget_per_poll=200, window_polls=5)])
    assert plan.fresh_pages("default") == 100
    assert [lane_for(p, 100) for p in (0, 99, 100, 5000)] == [
        Lane.FRESH,
        Lane.FRESH,
        Lane.BULK,
        Lane.BULK,
    ]
    assert lane_for(10**6, None) is Lane.FRESH  # no budget to plan for: no bulk lane


def test_bulk_limit_leaves_the_cheap_namespaces_their_share_of_every_window() -> None:
    """BULK pages get the window's budget minus what the cheap counts need in it."""
    sizes = {"big": 20_000_000, **{f"s{i}": 100 for i in range(30)}}
    previous = snapshot(account(A, sizes))
    cred = Credential("default", budget_per_poll=200, window_polls=5)
    plan = CountPlan(previous, [cred])
    assert plan.binding["default"]
    assert plan.cheap_requests["default"] == 31  # 30 one-page counts and the list
    # 31 x 5 polls x 1.25 for the cheap counts, 100 for the FRESH pages of a new walk
    assert plan.bulk_limit("default", 1000) == 1000 - 194 - 100
    assert plan.order("default", (A, "big")).fresh_pages == 0  # known large: all BULK
    assert plan.order("default", (A, "s1")).fresh_pages == 100


def test_bulk_limit_keeps_half_the_window_for_walks_at_tiny_intervals() -> None:
    """At a 1 s interval the lists of every interval would claim the window: walks keep half."""
    previous = snapshot(account(A, {"big": 130_000, "s": 7}))
    plan = CountPlan(previous, [Credential("default", budget_per_poll=3.3, window_polls=300)])
    assert plan.binding["default"]
    assert plan.bulk_limit("default", 1000) == 500  # never less than half the window


def test_bulk_lane_keeps_half_the_window_at_the_default_interval() -> None:
    """--interval 300, 1000 per 5 min: a 9M-object walk fits one window (review finding)."""
    previous = snapshot(account(A, {"big": 9_000_000, "s": 7}))
    plan = CountPlan(previous, [Credential("default", budget_per_poll=1000, window_polls=1)])
    assert not plan.binding["default"]
    assert plan.fresh_pages("default") == 500
    assert plan.bulk_limit("default", 1000) == 500  # 500 FRESH + 400 BULK pages: one window
    tight = snapshot(account(A, {f"n{i}": 15_000 for i in range(1000)}))
    binding = CountPlan(tight, [Credential("default", budget_per_poll=1000, window_polls=1)])
    assert binding.binding["default"] and binding.bulk_limit("default", 1000) == 500
    long = CountPlan(previous, [Credential("default", budget_per_poll=2000, window_polls=0.5)])
    assert long.fresh_pages("default") == 500  # half a window, not half of 10 minutes


# -- budget over time (fake clock) ---------------------------------------------------------


def simulate(
    *, shaped: bool, known: bool = True, polls: int = 20
) -> tuple[list[int], float | None]:
    """One 20-million-object namespace and 30 small ones, --interval 60, 1000 / 5 min.

    Requests are sent in ticks of 10 ms on a fake clock, each through ``try_acquire`` in
    its lane; latency is zero. Returns, per poll, how many of the 30 small namespaces were
    counted before the poll's deadline (90% of the interval), and when the big walk ended.
    With ``known=False`` the first poll knows no size (a fresh start): the big walk starts
    in the FRESH lane and the limits come from later polls' plans.
    """
    now = [0.0]
    limiter = RateLimiter(1000, 300, per_second=100, clock=lambda: now[0])
    sizes = {"big": 20_000_000, **{f"s{i}": 100 for i in range(30)}}
    cred = Credential("default", budget_per_poll=200, window_polls=5)
    plan = CountPlan(snapshot(account(A, sizes)), [cred])
    first = plan if known else CountPlan(snapshot(account(A, {}, extra=tuple(sizes))), [cred])
    fresh = first.order("default", (A, "big")).fresh_pages if shaped else None
    big_pages, big_done = 0, None
    fresh_counts: list[int] = []
    for poll in range(polls):
        if shaped:
            limiter.set_bulk_limit((plan if poll else first).bulk_limit("default", 1000))
        start, deadline = poll * 60.0, poll * 60.0 + 54.0
        now[0] = start
        listed = False
        small_left = [f"s{i}" for i in range(30)]
        counted = 0
        while now[0] < start + 60.0:
            if not listed:
                listed = limiter.try_acquire(Lane.CONTROL)
            elif small_left and limiter.try_acquire(Lane.FRESH):
                small_left.pop(0)
                counted += now[0] < deadline
            if big_done is None and limiter.try_acquire(lane_for(big_pages, fresh)):
                big_pages += 1
                if big_pages == 2000:
                    big_done = now[0]
            now[0] = round(now[0] + 0.01, 2)
        fresh_counts.append(counted)
    return fresh_counts, big_done


def test_a_huge_walk_never_starves_the_small_namespaces() -> None:
    """Shaped: every poll refreshes all 30 small namespaces, and the huge walk still ends."""
    counted, big_done = simulate(shaped=True)
    assert counted == [30] * len(counted)
    assert big_done is not None and big_done < 20 * 60


def test_a_huge_namespace_found_at_start_up_never_starves_them_either() -> None:
    """Sizes unknown at the first poll: the walk's FRESH share is capped all the same."""
    counted, big_done = simulate(shaped=True, known=False)
    assert counted == [30] * len(counted)
    assert big_done is not None


def test_without_lanes_the_huge_walk_starves_them() -> None:
    """The same load through one lane (the old behaviour): small counts miss polls."""
    counted, _ = simulate(shaped=False)
    assert min(counted) < 30
