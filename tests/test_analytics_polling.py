"""Usage analytics through the poller, over real HTTP against the simulator's /graphql.

The poller and the simulator's GraphQL endpoint share a fake clock, so a test walks through
polls minutes apart without sleeping; the REST side answers as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from structlog.testing import capture_logs

from do_exporter.analytics import AnalyticsState
from do_exporter.metrics.snapshot import render
from do_exporter.model import Snapshot
from do_exporter.planner import AnalyticsPlan
from do_exporter.poller import Poller
from do_exporter.simulator import Simulator
from tests.conftest import ACCOUNT_A, ACCOUNT_B, TOKEN, ns, scenario

MakeSim = Callable[..., Simulator]
T0 = 1_900_000_020.0  # 20 s past a minute
PLAN = AnalyticsPlan(delay=300.0, interval=60.0)
NS1, NS2 = f"{1:032x}", f"{2:032x}"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def setup(
    make_sim: MakeSim, make_client: Callable[..., Any], **top: Any
) -> tuple[Simulator, Poller, Clock]:
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10), ns(2, 20)], ACCOUNT_B: [ns(3, 5)]}, **top))
    clock = Clock()
    sim.graphql.clock = clock
    poller = Poller(
        make_client(sim.api_url), account_ids=(ACCOUNT_A, ACCOUNT_B), analytics=PLAN, clock=clock
    )
    return sim, poller, clock


def requests_truth(sim: Simulator, account: str, ns_id: str, state: AnalyticsState) -> float:
    assert state.first_start is not None and state.watermark is not None
    return sim.graphql.truth(account, ns_id, state.first_start, state.watermark)["requests"]


def test_one_query_per_account_and_counters_equal_the_truth(
    make_sim: MakeSim, make_client: Callable[..., Any]
) -> None:
    """Each poll asks one query per account; counters sum the closed minutes exactly."""
    sim, poller, clock = setup(make_sim, make_client)
    snap = poller.poll(Snapshot())
    # Two accounts: each reads its plan's limits (settings) once, then one query a poll.
    assert sim.stats()["requests"]["graphql"]["200"] == 4
    state = snap.analytics[ACCOUNT_A]
    # The first window: the last interval of whole minutes older than the delay.
    assert state.watermark == (int(T0 - 300) // 60) * 60
    assert state.first_start == state.watermark - 60
    for _ in range(3):
        clock.now += 60
        snap = poller.poll(snap)
    assert sim.stats()["requests"]["graphql"]["200"] == 4 + 6
    state = snap.analytics[ACCOUNT_A]
    assert state.watermark is not None and state.first_start is not None
    assert state.watermark - state.first_start == 4 * 60
    for ns_id in (NS1, NS2):
        assert state.counters[ns_id].requests == requests_truth(sim, ACCOUNT_A, ns_id, state)
    text = render(snap).decode()
    assert f'cloudflare_durable_objects_requests_total{{account_id="{ACCOUNT_A}",' in text
    assert "_created" not in text


def test_a_failed_query_is_caught_up_without_a_gap_or_an_overlap(
    make_sim: MakeSim, make_client: Callable[..., Any]
) -> None:
    """An error in a 200 counts nothing; the next poll asks for both windows at once."""
    sim, poller, clock = setup(make_sim, make_client)
    snap = poller.poll(Snapshot())
    before = snap.analytics[ACCOUNT_A]
    # Both accounts' next queries, refused (not transient: not asked again in the poll).
    sim.inject("success_false", endpoint="graphql", count=2, code=1000, message="refused")
    clock.now += 60
    with capture_logs() as logs:
        failed = poller.poll(snap)
    after = failed.analytics[ACCOUNT_A]
    assert after.watermark == before.watermark and after.counters == before.counters
    assert after.queries["failure"] == 1
    assert any(e["event"].startswith("usage analytics query failed") for e in logs)
    assert failed.account(ACCOUNT_A).last_poll_success  # type: ignore[union-attr]
    clock.now += 60
    caught_up = poller.poll(failed).analytics[ACCOUNT_A]
    assert caught_up.watermark == (before.watermark or 0) + 120
    assert caught_up.counters[NS1].requests == requests_truth(sim, ACCOUNT_A, NS1, caught_up)


def test_without_analytics_permission_the_inventory_is_untouched(
    make_sim: MakeSim, make_client: Callable[..., Any]
) -> None:
    """Account Analytics Read missing: one warning, no poll failure, counts still exported."""
    perms = {
        ACCOUNT_A: ["workers_scripts_read"],
        "*": ["workers_scripts_read", "account_analytics_read"],
    }
    _sim, poller, clock = setup(
        make_sim, make_client, tokens=[{"value": TOKEN, "accounts": "*", "permissions": perms}]
    )
    with capture_logs() as logs:
        snap = poller.poll(Snapshot())
        clock.now += 60
        snap = poller.poll(snap)
    denied = [e for e in logs if e["event"].startswith("usage analytics off")]
    assert [e["account_id"] for e in denied] == [ACCOUNT_A]  # once, naming the account
    assert "Account Analytics: Read" in denied[0]["event"]
    account = snap.account(ACCOUNT_A)
    assert account is not None and account.last_poll_success and snap.complete
    assert account.counts[NS1].objects == 10
    assert snap.analytics[ACCOUNT_A].queries["denied"] == 1  # not asked again this hour
    assert snap.analytics[ACCOUNT_A].watermark is None
    assert snap.analytics[ACCOUNT_B].watermark is not None  # the other account is counted


def test_analytics_off_asks_nothing(make_sim: MakeSim, make_client: Callable[..., Any]) -> None:
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10)]}))
    snap = Poller(make_client(sim.api_url), account_ids=(ACCOUNT_A,)).poll(Snapshot())
    assert "graphql" not in sim.stats()["requests"] and not snap.analytics
    assert "requests_total" not in render(snap).decode()


def test_a_namespace_gone_from_the_inventory_loses_its_usage_series(
    make_sim: MakeSim, make_client: Callable[..., Any]
) -> None:
    sim, poller, clock = setup(make_sim, make_client)
    snap = poller.poll(Snapshot())
    assert NS2 in snap.analytics[ACCOUNT_A].counters
    sim.remove_namespace(ACCOUNT_A, NS2)
    clock.now += 60
    snap = poller.poll(snap)
    assert NS2 not in snap.analytics[ACCOUNT_A].counters
    assert NS2 not in render(snap).decode()


def test_a_storage_only_namespace_is_forgotten_when_it_leaves_the_inventory() -> None:
    """stored_bytes of an idle namespace (no counters) goes with the namespace (review)."""
    from types import MappingProxyType

    from do_exporter.analytics import AccountUsage, Window
    from do_exporter.publish import next_analytics

    state = AnalyticsState(ACCOUNT_A, watermark=600, stored_bytes=MappingProxyType({"idle": 9}))
    after = next_analytics(
        state,
        ACCOUNT_A,
        (Window(600, 660), AccountUsage()),
        now=1000.0,
        namespace_ids=frozenset(),
    )
    assert after is not None and dict(after.stored_bytes) == {}


def test_a_transient_error_is_asked_again_within_the_poll(
    make_sim: MakeSim, make_client: Callable[..., Any]
) -> None:
    """An internal error inside a 200 ("try again later") is retried after a backoff, and
    the retry's answer is counted in the same poll (a poll with a deadline: the daemon's)."""
    sim, poller, clock = setup(make_sim, make_client)
    snap = poller.poll(Snapshot())
    before = snap.analytics[ACCOUNT_A]
    asked = sim.stats()["requests"]["graphql"]["200"]
    sim.inject("success_false", endpoint="graphql", count=1)
    clock.now += 60
    state = poller.poll(snap, deadline=clock.now + 60).analytics
    assert sim.stats()["requests"]["graphql"]["200"] == asked + 3  # two queries, one retry
    for account in (ACCOUNT_A, ACCOUNT_B):
        assert state[account].queries["failure"] == 0
        assert state[account].watermark == (before.watermark or 0) + 60


def test_settings_are_read_at_start_up_then_hourly_and_shape_windows_and_pages(
    make_sim: MakeSim, make_client: Callable[..., Any]
) -> None:
    """The plan's limits come from settings, per account, at start-up and hourly: a plan
    that allows 10 minutes a query gives up the older part of a 20-minute gap (the 1-day
    default would not); pages within the plan's page size are tested in
    test_analytics_objects.py."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10), ns(2, 20)], ACCOUNT_B: [ns(3, 5)]}))
    clock = Clock()
    sim.graphql.clock = clock
    sim.graphql.max_duration = 600
    client = make_client(sim.api_url)
    asked: list[str] = []
    graphql = client.graphql

    def recording(account_id: str, body: Any) -> Any:
        asked.append(body["query"].split("(", 1)[0].split()[-1])
        return graphql(account_id, body)

    client.graphql = recording
    poller = Poller(client, account_ids=(ACCOUNT_A, ACCOUNT_B), analytics=PLAN, clock=clock)
    snap = poller.poll(Snapshot())
    assert sorted(asked) == ["DurableObjectsLimits"] * 2 + ["DurableObjectsUsage"] * 2
    asked.clear()
    clock.now += 20 * 60
    snap = poller.poll(snap)
    assert "DurableObjectsLimits" not in asked  # within the hour: usage only
    state = snap.analytics[ACCOUNT_A]
    assert state.skipped_seconds == 10 * 60 and state.watermark is not None
    assert state.first_start is not None
    assert state.watermark - state.first_start - state.skipped_seconds == 60 + 600
    asked.clear()
    clock.now += 3600
    poller.poll(snap)
    assert asked.count("DurableObjectsLimits") == 2  # an hour later: read again


def test_without_a_deadline_a_transient_error_is_not_asked_again(
    make_sim: MakeSim, make_client: Callable[..., Any]
) -> None:
    """A poll without a deadline (--once) asks once: a transient error is a failure of that
    poll, not a retry that could hold --once for another request budget."""
    sim, poller, clock = setup(make_sim, make_client)
    snap = poller.poll(Snapshot())
    asked = sim.stats()["requests"]["graphql"]["200"]
    sim.inject("success_false", endpoint="graphql", count=1)
    clock.now += 60
    state = poller.poll(snap).analytics
    assert sim.stats()["requests"]["graphql"]["200"] == asked + 2  # two queries, no retry
    assert sum(state[account].queries["failure"] for account in (ACCOUNT_A, ACCOUNT_B)) == 1
