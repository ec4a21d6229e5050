"""The poller against the simulator over real HTTP: values, request counts, failures."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from do_exporter.cloudflare import CloudflareClient
from do_exporter.model import Snapshot
from do_exporter.poller import Poller
from do_exporter.simulator import Simulator
from tests.conftest import ACCOUNT_A, ACCOUNT_B, ns, scenario

MakeSim = Callable[..., Simulator]
MakeClient = Callable[..., CloudflareClient]


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for background work to end (instead of sleeping for as long as it may take)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.01)


def idle(poller: Poller) -> bool:
    """No discovery, list or walk of an earlier poll is still running."""
    view = poller._view()
    return not (view.discovering or view.listing or view.walks)


def requests_to(sim: Simulator, endpoint: str) -> int:
    return sum(sim.stats()["requests"].get(endpoint, {}).values())


def assert_matches_simulator(snap: Snapshot, sim: Simulator) -> None:
    for account_id in sim.account_ids:
        account = snap.account(account_id)
        assert account is not None and account.last_poll_success
        assert sorted(n.id for n in account.namespaces) == sorted(sim.namespace_ids(account_id))
        for ns_id in sim.namespace_ids(account_id):
            count = account.counts[ns_id]
            assert (count.objects, count.with_stored_data) == sim.expected(account_id, ns_id)


@pytest.mark.parametrize("shape", ["both", "cursor", "cursors"])
def test_counts_match_and_requests_are_minimal(
    make_sim: MakeSim, make_client: MakeClient, shape: str
) -> None:
    """Every count equals the simulator's truth, with exactly the minimum requests."""
    sizes = {ACCOUNT_A: [0, 1, 9_999, 10_000, 25_001], ACCOUNT_B: [12_345]}
    sim = make_sim(
        scenario(
            {
                acc: [ns(i + 10 * k, n) for i, n in enumerate(counts)]
                for k, (acc, counts) in enumerate(sizes.items())
            },
            cursor_shape=shape,
        )
    )
    poller = Poller(make_client(sim.api_url), account_ids=(ACCOUNT_A, ACCOUNT_B), max_workers=4)
    snap = poller.poll(Snapshot())
    assert_matches_simulator(snap, sim)
    assert snap.complete and snap.ready
    minimum_object_pages = sum(max(1, math.ceil(n / 10_000)) for c in sizes.values() for n in c)
    assert requests_to(sim, "objects") == minimum_object_pages
    assert requests_to(sim, "namespaces") == 2  # one page per account
    assert requests_to(sim, "accounts") == 0  # ids were configured


def test_server_capped_page_sizes(make_sim: MakeSim, make_client: MakeClient) -> None:
    """A server that caps per_page and limit still yields exact counts."""
    sim = make_sim(
        scenario({ACCOUNT_A: [ns(i, 95 + i) for i in range(7)]}, max_per_page=3, max_limit=10)
    )
    snap = Poller(make_client(sim.api_url), account_ids=(ACCOUNT_A,)).poll(Snapshot())
    assert_matches_simulator(snap, sim)
    assert requests_to(sim, "namespaces") == 3  # 7 namespaces, 3 a page
    assert requests_to(sim, "objects") == sum(math.ceil((95 + i) / 10) for i in range(7))


def test_account_discovery(make_sim: MakeSim, make_client: MakeClient) -> None:
    """Without configured ids, every account the token reads is polled."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10)], ACCOUNT_B: [ns(2, 20)]}))
    snap = Poller(make_client(sim.api_url)).poll(Snapshot())
    assert sorted(a.account_id for a in snap.accounts) == sorted([ACCOUNT_A, ACCOUNT_B])
    assert_matches_simulator(snap, sim)
    assert requests_to(sim, "accounts") == 1


def test_failing_namespace_does_not_lose_the_others(
    make_sim: MakeSim, make_client: MakeClient
) -> None:
    """One namespace failing keeps its last count; the others are fresh; the poll is marked."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 100), ns(2, 200), ns(3, 300)]}))
    poller = Poller(make_client(sim.api_url), account_ids=(ACCOUNT_A,))
    first = poller.poll(Snapshot())
    bad = f"{2:032x}"
    sim.add_objects(ACCOUNT_A, f"{1:032x}", 5)
    sim.add_objects(ACCOUNT_A, bad, 5)
    sim.inject("status", endpoint="objects", namespace_id=bad, status=500, count=None)
    with capture_logs() as logs:
        second = poller.poll(first)
    account = second.account(ACCOUNT_A)
    assert account is not None and not account.last_poll_success and not second.complete
    assert account.counts[f"{1:032x}"].objects == 105
    assert account.counts[bad].objects == 200  # last complete value, not a partial one
    assert account.counts[bad].completed_at == first.account(ACCOUNT_A).counts[bad].completed_at  # type: ignore[union-attr]
    failures = [e for e in logs if e["event"] == "API request failed"]
    assert failures and all(e["namespace_id"] == bad and e["status"] == 500 for e in failures)
    assert failures[-1]["retry"] is False
    summary = [e for e in logs if e["event"] == "poll finished with failures"]
    assert summary and summary[0]["failed_namespaces"] == [f"{ACCOUNT_A}/{bad}"]


def test_namespace_disappearing_between_polls(make_sim: MakeSim, make_client: MakeClient) -> None:
    """A namespace removed from the list loses all its state at once."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10), ns(2, 20)]}))
    poller = Poller(make_client(sim.api_url), account_ids=(ACCOUNT_A,))
    first = poller.poll(Snapshot())
    sim.remove_namespace(ACCOUNT_A, f"{2:032x}")
    account = poller.poll(first).account(ACCOUNT_A)
    assert account is not None
    assert [n.id for n in account.namespaces] == [f"{1:032x}"]
    assert f"{2:032x}" not in account.counts and account.last_poll_success


def test_namespace_list_failure_keeps_last_snapshot(
    make_sim: MakeSim, make_client: MakeClient
) -> None:
    """A failed namespace list keeps every value of the account and marks the poll failed."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10)], ACCOUNT_B: [ns(2, 20)]}))
    poller = Poller(make_client(sim.api_url), account_ids=(ACCOUNT_A, ACCOUNT_B))
    first = poller.poll(Snapshot())
    sim.inject("html", endpoint="namespaces", status=503, count=None)
    second = poller.poll(first)
    for acc in (ACCOUNT_A, ACCOUNT_B):
        before, after = first.account(acc), second.account(acc)
        assert before is not None and after is not None
        assert after.counts == before.counts and not after.last_poll_success
        assert after.polls_failure == 1


def test_unknown_account_fails_alone(make_sim: MakeSim, make_client: MakeClient) -> None:
    """An account the token cannot reach fails; the other account is still exported."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10)]}))
    other = "c" * 32
    snap = Poller(make_client(sim.api_url), account_ids=(ACCOUNT_A, other)).poll(Snapshot())
    good, bad = snap.account(ACCOUNT_A), snap.account(other)
    assert good is not None and good.last_poll_success
    assert bad is not None and not bad.last_poll_success and not bad.namespaces_listed
    assert not snap.complete


def test_poll_recovers_after_transient_faults(make_sim: MakeSim, make_client: MakeClient) -> None:
    """429 with Retry-After and an HTML 502 are retried within the poll, which succeeds."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 25_000)]}))
    sim.inject("status", endpoint="objects", status=429, code=971, retry_after=1, count=1)
    sim.inject("html", endpoint="objects", status=502, count=1)
    snap = Poller(make_client(sim.api_url), account_ids=(ACCOUNT_A,)).poll(Snapshot())
    assert_matches_simulator(snap, sim)
    statuses: dict[str, Any] = sim.stats()["requests"]["objects"]
    assert statuses.get("429") == 1 and statuses.get("502") == 1
    assert statuses.get("200") == 3


def test_namespace_deleted_between_listing_and_counting(
    make_sim: MakeSim, make_client: MakeClient
) -> None:
    """A 404 (code 10066) while counting means the namespace is gone, not that the poll failed."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10), ns(2, 20)]}))
    gone = f"{2:032x}"
    sim.inject(
        "status",
        endpoint="objects",
        namespace_id=gone,
        status=404,
        code=10066,
        message="namespace not found",
        count=1,
    )
    snap = Poller(make_client(sim.api_url), account_ids=(ACCOUNT_A,)).poll(Snapshot())
    account = snap.account(ACCOUNT_A)
    assert account is not None and account.last_poll_success
    assert [n.id for n in account.namespaces] == [f"{1:032x}"]
    assert gone not in account.counts


def test_deadline_publishes_fast_namespaces_and_carries_slow_walks_over(
    make_sim: MakeSim, make_client: MakeClient
) -> None:
    """At the deadline the poll publishes what it has; the slow walk joins the next poll."""

    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10), ns(2, 20), ns(3, 30)]}))
    slow = f"{3:032x}"
    sim.inject("delay", endpoint="objects", namespace_id=slow, seconds=1.5, count=1)
    poller = Poller(make_client(sim.api_url), account_ids=(ACCOUNT_A,))
    first = poller.poll(Snapshot(), deadline=time.time() + 0.7)
    account = first.account(ACCOUNT_A)
    assert account is not None
    assert set(account.counts) == {f"{1:032x}", f"{2:032x}"}  # the slow one is not there yet
    # Its only request hung through the whole poll: no progress, so the poll is not a success.
    assert not account.last_poll_success
    assert not first.complete and poller.inflight() == 1

    wait_until(lambda: poller.inflight() == 0, "the slow walk ends in the background")
    sim.reset_stats()
    second = poller.poll(first, deadline=time.time() + 5)
    # Its finished walk is used as it is, not repeated: only the two others are walked.
    assert sum(sim.stats()["requests"].get("objects", {}).values()) == 2
    account = second.account(ACCOUNT_A)
    assert account is not None and second.complete
    assert account.counts[slow].objects == 30
    # The carried-over count keeps its own completion time, earlier than this poll's counts.
    assert account.counts[slow].completed_at < account.counts[f"{1:032x}"].completed_at


def test_walk_in_flight_is_not_started_twice(make_sim: MakeSim, make_client: MakeClient) -> None:
    """A namespace whose walk outlived one poll is skipped by the next, not walked again."""

    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10), ns(2, 20)]}))
    slow = f"{2:032x}"
    sim.inject("delay", endpoint="objects", namespace_id=slow, seconds=2.0, count=1)
    poller = Poller(make_client(sim.api_url), account_ids=(ACCOUNT_A,))
    first = poller.poll(Snapshot(), deadline=time.time() + 0.5)
    sim.reset_stats()
    second = poller.poll(first, deadline=time.time() + 0.5)
    assert sum(sim.stats()["requests"].get("objects", {}).values()) == 1  # only namespace 1
    account = second.account(ACCOUNT_A)
    assert account is not None and slow not in account.counts
    wait_until(lambda: poller.inflight() == 0, "the slow walk ends")
    third = poller.poll(second, deadline=time.time() + 5)
    assert third.account(ACCOUNT_A).counts[slow].objects == 20  # type: ignore[union-attr]


@pytest.mark.parametrize("fault", ["drop", "disconnect", "truncated", "invalid_json"])
def test_broken_answers_are_retried_or_failed_never_miscounted(
    make_sim: MakeSim, make_client: MakeClient, fault: str
) -> None:
    """A body cut mid-way, a closed connection or broken JSON never becomes a count.

    Transport failures (drop, disconnect) are retried and the poll succeeds; an unusable
    200 body (truncated, invalid JSON) fails that namespace, which keeps no partial value.
    """
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 25_000)]}))
    sim.inject(fault, endpoint="objects", count=1)
    snap = Poller(make_client(sim.api_url), account_ids=(ACCOUNT_A,)).poll(Snapshot())
    account = snap.account(ACCOUNT_A)
    assert account is not None
    if fault in ("drop", "disconnect"):
        assert_matches_simulator(snap, sim)
    else:
        assert not account.last_poll_success and f"{1:032x}" not in account.counts


def test_walk_progressing_across_the_deadline_is_not_a_failure(
    make_sim: MakeSim, make_client: MakeClient
) -> None:
    """A long walk that moves during the poll is in progress, not stalled: the poll succeeds."""

    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10), ns(2, 35_000)]}))
    big = f"{2:032x}"
    sim.inject("delay", endpoint="objects", namespace_id=big, seconds=0.4, count=None)
    poller = Poller(make_client(sim.api_url), account_ids=(ACCOUNT_A,))
    first = poller.poll(Snapshot(), deadline=time.time() + 1.0)
    account = first.account(ACCOUNT_A)
    assert account is not None and account.last_poll_success
    assert big not in account.counts and poller.inflight() == 1
    sim.clear_faults()
    wait_until(lambda: poller.inflight() == 0, "the big walk ends")
    second = poller.poll(first, deadline=time.time() + 5)
    assert second.account(ACCOUNT_A).counts[big].objects == 35_000  # type: ignore[union-attr]


def test_stuck_namespace_list_is_not_requested_again(
    make_sim: MakeSim, make_client: MakeClient
) -> None:
    """A list request hanging past the deadline is not repeated by the next poll (no pile-up)."""

    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10)]}))
    sim.inject("delay", endpoint="namespaces", seconds=2.0, count=1)
    poller = Poller(make_client(sim.api_url), account_ids=(ACCOUNT_A,))
    first = poller.poll(Snapshot(), deadline=time.time() + 0.5)
    second = poller.poll(first, deadline=time.time() + 0.5)
    assert sum(sim.stats()["requests"].get("namespaces", {}).values()) == 1
    assert not second.account(ACCOUNT_A).last_poll_success  # type: ignore[union-attr]
    wait_until(lambda: idle(poller), "the hung list answers (2 s after it was sent)")
    third = poller.poll(second, deadline=time.time() + 5)
    assert third.complete


def test_carried_over_walk_survives_a_failed_list(
    make_sim: MakeSim, make_client: MakeClient
) -> None:
    """A walk that ended after its poll is kept when the next list fails, not walked again."""

    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10), ns(2, 20)]}))
    slow = f"{2:032x}"
    sim.inject("delay", endpoint="objects", namespace_id=slow, seconds=1.0, count=1)
    poller = Poller(make_client(sim.api_url), account_ids=(ACCOUNT_A,))
    first = poller.poll(Snapshot(), deadline=time.time() + 0.4)
    wait_until(lambda: poller.inflight() == 0, "the slow walk ends after its poll")
    sim.inject("status", endpoint="namespaces", status=500, count=4)
    second = poller.poll(first, deadline=time.time() + 5)
    assert not second.account(ACCOUNT_A).last_poll_success  # type: ignore[union-attr]
    sim.reset_stats()
    third = poller.poll(second, deadline=time.time() + 5)
    account = third.account(ACCOUNT_A)
    assert account is not None and account.counts[slow].objects == 20
    assert sum(sim.stats()["requests"].get("objects", {}).values()) == 1  # namespace 1 only


def test_cancel_interrupts_a_hanging_discovery(make_sim: MakeSim, make_client: MakeClient) -> None:
    """Shutdown does not wait for GET /accounts: discovery runs on a daemon worker."""
    import threading

    from do_exporter.ratelimit import Cancelled

    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10)]}))
    sim.inject("delay", endpoint="accounts", seconds=30, count=1)
    cancel = threading.Event()
    poller = Poller(make_client(sim.api_url, cancel=cancel), cancel=cancel)
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        poller.poll(Snapshot())
    assert time.monotonic() - started < 3


# -- discovery mode: an account goes only when a complete GET /accounts answer lacks it ------


def discovery_baseline(
    make_sim: MakeSim, make_client: MakeClient, **poller_args: Any
) -> tuple[Simulator, Poller, Snapshot]:
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10), ns(2, 25_000)], ACCOUNT_B: [ns(3, 20)]}))
    poller = Poller(make_client(sim.api_url), **poller_args)
    first = poller.poll(Snapshot())
    assert_matches_simulator(first, sim)
    return sim, poller, first


def assert_kept(snap: Snapshot, before: Snapshot, *, success: bool | None) -> None:
    """Every account of ``before`` is still exported, with its counts and its poll count."""
    assert [a.account_id for a in snap.accounts] == [a.account_id for a in before.accounts]
    for old in before.accounts:
        new = snap.account(old.account_id)
        assert new is not None and new.counts.keys() == old.counts.keys()
        assert success is None or new.last_poll_success is success
        assert new.polls_success + new.polls_failure == old.polls_success + old.polls_failure + 1
    assert snap.ready


def test_slow_discovery_keeps_every_account(make_sim: MakeSim, make_client: MakeClient) -> None:
    """GET /accounts slower than the poll: the known accounts are polled and kept, every poll."""

    sim, poller, snap = discovery_baseline(make_sim, make_client)
    sim.inject("delay", endpoint="accounts", seconds=1.5, count=None)
    for _ in range(3):
        before, snap = snap, poller.poll(snap, deadline=time.time() + 0.5)
        assert_kept(snap, before, success=True)  # their own lists and counts were read
        assert not snap.complete  # but the account list itself was not confirmed


def test_late_discovery_answer_removes_a_gone_account_next_poll(
    make_sim: MakeSim, make_client: MakeClient
) -> None:
    """A late answer is not thrown away: the next poll starts from it."""

    sim, poller, first = discovery_baseline(make_sim, make_client)
    sim.inject("delay", endpoint="accounts", seconds=0.6, count=1)
    sim.remove_account(ACCOUNT_B)
    second = poller.poll(first, deadline=time.time() + 0.3)
    assert {a.account_id for a in second.accounts} == {ACCOUNT_A, ACCOUNT_B}
    # The delayed answer (without B) arrives after that poll.
    wait_until(lambda: idle(poller), "the late discovery answer")
    third = poller.poll(second, deadline=time.time() + 5)
    assert [a.account_id for a in third.accounts] == [ACCOUNT_A]


def test_rate_limit_block_longer_than_the_poll_keeps_every_account(
    make_sim: MakeSim, make_client: MakeClient
) -> None:
    """A 429 block pauses discovery and every list past the deadline: all series stay."""

    sim, poller, first = discovery_baseline(make_sim, make_client)
    sim.inject("status", status=429, code=971, retry_after=1, count=3)
    second = poller.poll(first, deadline=time.time() + 0.4)
    assert_kept(second, first, success=False)  # the lists were held by the pause
    wait_until(lambda: idle(poller), "the lists held by the pause end")
    third = poller.poll(second, deadline=time.time() + 5)
    assert third.complete
    assert_matches_simulator(third, sim)


def test_walks_holding_every_worker_do_not_hold_up_lists(
    make_sim: MakeSim, make_client: MakeClient
) -> None:
    """With the only walk thread busy on a carried-over walk, discovery and lists still run."""

    sim, poller, first = discovery_baseline(make_sim, make_client, max_workers=1)
    big = f"{2:032x}"
    sim.inject("delay", endpoint="objects", namespace_id=big, seconds=1.0, count=None)
    sim.add_objects(ACCOUNT_A, big, 10_000)  # the next walk of it takes 3 slow pages
    second = poller.poll(first, deadline=time.time() + 0.5)
    assert poller.inflight() == 1  # the big walk holds the only walk thread
    third = poller.poll(second, deadline=time.time() + 0.5)
    for before, after in ((first, second), (second, third)):
        assert_kept(after, before, success=None)  # B's count could not start: may fail
    requests = sim.stats()["requests"]
    assert requests["accounts"]["200"] == 3  # discovery ran every poll
    assert requests["namespaces"]["200"] == 6  # and every account was listed every poll


def test_workers_follow_the_api_latency_not_our_own_cpu(
    make_sim: MakeSim, make_client: MakeClient
) -> None:
    """A fast API needs few walk threads: the count starts at 4 and stays low, not at 64."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(i, 30_000) for i in range(40)]}))
    poller = Poller(
        make_client(sim.api_url), account_ids=(ACCOUNT_A,), max_workers=64, burst_rate=100
    )
    assert poller.workers() == 4  # nothing known yet: start small, grow with answers
    snap = poller.poll(Snapshot())
    assert_matches_simulator(snap, sim)
    assert poller.workers() <= 16  # latency to the response head on loopback: milliseconds
    sim.inject("delay", endpoint="objects", seconds=0.3, count=None)
    poller.poll(snap)
    assert poller.workers() >= 30  # 100/s x 0.3 s x 1.25: a slow API gets more threads
