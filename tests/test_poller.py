"""The poller: values, request counts and failures against the simulator over real HTTP;
deadlines, carried-over walks and hung requests against a scripted client on a fake clock.

No test here waits for wall time to pass: a "slow" request is held on a gate the test
opens, and a poll's deadline comes when the test moves the :class:`FakeClock`.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from structlog.testing import capture_logs

from do_exporter.cloudflare import CloudflareAPIError, CloudflareClient
from do_exporter.model import Account, Namespace, ObjectCount, Snapshot
from do_exporter.nsfilter import NamespaceFilter
from do_exporter.poller import Poller
from do_exporter.ratelimit import Cancelled, Lane
from do_exporter.simulator import Simulator
from tests.conftest import ACCOUNT_A, ACCOUNT_B, ns, scenario
from tests.support import SAFETY_TIMEOUT, FakeClock, wait_until

MakeSim = Callable[..., Simulator]
MakeClient = Callable[..., CloudflareClient]


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


def test_namespace_filter_skips_walks_and_series_but_not_the_totals(
    make_sim: MakeSim, make_client: MakeClient
) -> None:
    """A filtered-out namespace gets no walk and no series; the account's totals count it."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10), ns(2, 20), ns(3, 30)]}))
    names = {
        n.id: n.name
        for n in Poller(make_client(sim.api_url)).poll(Snapshot()).accounts[0].namespaces
    }
    sim.reset_stats()
    kept = {f"{1:032x}", f"{3:032x}"}
    pattern = "|".join(re.escape(names[n] or "") for n in kept)
    poller = Poller(
        make_client(sim.api_url),
        account_ids=(ACCOUNT_A,),
        namespace_filter=NamespaceFilter(include=re.compile(pattern)),
    )
    account = poller.poll(Snapshot()).account(ACCOUNT_A)
    assert account is not None and account.last_poll_success
    assert {n.id for n in account.namespaces} == set(account.counts) == kept
    assert account.namespace_count == 3
    assert requests_to(sim, "objects") == 2  # no walk of the filtered namespace


def test_an_endless_cursor_on_a_first_walk_fails_at_an_hour_of_budget(
    make_sim: MakeSim, make_client: MakeClient
) -> None:
    """No count yet and a cursor that never ends: the walk stops at the pages an hour of the
    credential's budget allows (5 a poll, one poll a window: 60), counted, not 100,000."""
    sim = make_sim(scenario({ACCOUNT_A: [ns(1, 10), ns(2, 20)]}, max_limit=10))
    endless = f"{2:032x}"
    sim.inject("endless_cursor", endpoint="objects", namespace_id=endless, count=None)
    poller = Poller(make_client(sim.api_url), account_ids=(ACCOUNT_A,), budget_per_poll=5)
    with capture_logs() as logs:
        snap = poller.poll(Snapshot())
    account = snap.account(ACCOUNT_A)
    assert account is not None and not account.last_poll_success
    assert endless not in account.counts and account.counts[f"{1:032x}"].objects == 10
    assert requests_to(sim, "objects") == 1 + 60
    guard = [e for e in logs if e["event"] == "API pagination error"]
    assert [e["error"] for e in guard] == ["more than 60 pages (walk guard)"]


# -- deadlines and hung requests: a scripted client on a fake clock -------------------------


class FakeApi:
    """A scripted :class:`~do_exporter.source.ApiClient`: accounts -> namespace -> objects.

    Every request is counted under a key (``("accounts",)``, ``("list", account)``,
    ``("page", account, namespace, n)``); :meth:`hold` makes the request with that key wait
    until the test opens the gate it returns; :meth:`fail` makes it raise.
    """

    def __init__(self, accounts: dict[str, dict[str, int]], page: int = 10) -> None:
        self.accounts = accounts
        self.page = page
        self.latency: float | None = None
        self.calls: Counter[tuple[Any, ...]] = Counter()
        self.ended: Counter[tuple[Any, ...]] = Counter()
        self._gates: dict[tuple[Any, ...], threading.Event] = {}
        self._errors: dict[tuple[Any, ...], int] = {}
        self._lock = threading.Lock()

    @property
    def requests_made(self) -> int:
        return sum(self.calls.values())

    def hold(self, *key: Any) -> threading.Event:
        gate = self._gates[key] = threading.Event()
        return gate

    def fail(self, *key: Any, times: int = 1) -> None:
        self._errors[key] = times

    def requests(self, kind: str) -> int:
        return sum(n for key, n in self.calls.items() if key[0] == kind)

    def _request(self, *key: Any) -> None:
        with self._lock:
            self.calls[key] += 1
            failing = self._errors.get(key, 0) > 0
            if failing:
                self._errors[key] -= 1
        gate = self._gates.get(key)
        if gate is not None:
            gate.wait(SAFETY_TIMEOUT)
        with self._lock:
            self.ended[key] += 1
        if failing:
            raise CloudflareAPIError(
                "scripted failure", endpoint=str(key[0]), kind="http", status=500
            )

    def list_accounts(self) -> list[Account]:
        self._request("accounts")
        return [Account(a) for a in self.accounts]

    def list_namespaces(self, account_id: str) -> list[Namespace]:
        self._request("list", account_id)
        return [Namespace(n, n) for n in self.accounts[account_id]]

    def count_objects(
        self,
        account_id: str,
        namespace_id: str,
        progress: Callable[[int], None] | None = None,
        *,
        max_pages: int | None = None,
        lane: Callable[[int], Lane] | None = None,
    ) -> ObjectCount:
        objects = self.accounts[account_id][namespace_id]
        pages = max(1, math.ceil(objects / self.page))
        for n in range(1, pages + 1):
            self._request("page", account_id, namespace_id, n)
            if progress is not None:
                progress(n)
        return ObjectCount(objects, 0, pages)

    def graphql(self, account_id: str, body: Any) -> Any:
        raise AssertionError("no analytics in these tests")


def open_all(gates: Iterable[threading.Event]) -> None:
    for gate in gates:
        gate.set()


class Polls:
    """Runs polls of one poller on a fake clock: the deadline comes when the test says."""

    def __init__(self, api: FakeApi, **poller_args: Any) -> None:
        self.api = api
        self.clock = FakeClock(1_000_000.0)
        poller_args.setdefault("account_ids", tuple(api.accounts))
        self.poller = Poller(api, clock=self.clock, **poller_args)

    def until(self, previous: Snapshot, ready: Callable[[], bool], what: str) -> Snapshot:
        """A poll whose deadline passes once ``ready()`` holds (its work got that far), unless
        it ended before (every task it started ended)."""
        out: list[Snapshot] = []
        deadline = self.clock.now + 30.0
        thread = threading.Thread(
            target=lambda: out.append(self.poller.poll(previous, deadline=deadline)), daemon=True
        )
        thread.start()
        wait_until(lambda: ready() or not thread.is_alive(), what)  # or it ended: nothing hung
        self.clock.advance(30.0)
        thread.join(SAFETY_TIMEOUT)
        assert out, "the poll ended at its deadline"
        return out[0]

    def complete(self, previous: Snapshot) -> Snapshot:
        """A poll that waits for all of its work (no deadline)."""
        self.clock.advance(30.0)
        return self.poller.poll(previous)

    def idle(self) -> bool:
        return idle(self.poller)


N1, N2, N3 = "n1", "n2", "n3"


def test_deadline_publishes_fast_namespaces_and_carries_slow_walks_over() -> None:
    """At the deadline the poll publishes what it has; the slow walk joins the next poll."""
    api = FakeApi({ACCOUNT_A: {N1: 10, N2: 20, N3: 30}})
    gate = api.hold("page", ACCOUNT_A, N3, 1)
    polls = Polls(api)
    first = polls.until(
        Snapshot(),
        lambda: polls.poller.delivered() == 2 and api.calls[("page", ACCOUNT_A, N3, 1)] == 1,
        "the fast walks end, the slow one hangs",
    )
    account = first.account(ACCOUNT_A)
    assert account is not None
    assert set(account.counts) == {N1, N2}  # the slow one is not there yet
    # Its only request hung through the whole poll: no progress, so the poll is not a success.
    assert not account.last_poll_success
    assert not first.complete and polls.poller.inflight() == 1

    gate.set()
    wait_until(lambda: polls.poller.inflight() == 0, "the slow walk ends in the background")
    before = api.requests("page")
    second = polls.complete(first)
    # Its finished walk is used as it is, not repeated: only the two others are walked.
    assert api.requests("page") - before == 1 + 2
    account = second.account(ACCOUNT_A)
    assert account is not None and second.complete
    assert account.counts[N3].objects == 30
    # The carried-over count keeps its own completion time, earlier than this poll's counts.
    assert account.counts[N3].completed_at < account.counts[N1].completed_at


def test_walk_in_flight_is_not_started_twice() -> None:
    """A namespace whose walk outlived one poll is skipped by the next, not walked again."""
    api = FakeApi({ACCOUNT_A: {N1: 10, N2: 20}})
    gate = api.hold("page", ACCOUNT_A, N2, 1)
    polls = Polls(api)

    def ready() -> bool:  # N1 counted, N2's walk hangs
        return polls.poller.delivered() == 1 and api.calls[("page", ACCOUNT_A, N2, 1)] == 1

    first = polls.until(Snapshot(), ready, "poll 1")
    second = polls.until(first, ready, "poll 2")
    assert api.calls[("page", ACCOUNT_A, N2, 1)] == 1  # never requested twice
    account = second.account(ACCOUNT_A)
    assert account is not None and N2 not in account.counts
    gate.set()
    wait_until(lambda: polls.poller.inflight() == 0, "the slow walk ends")
    third = polls.complete(second)
    assert third.account(ACCOUNT_A).counts[N2].objects == 20  # type: ignore[union-attr]
    assert api.calls[("page", ACCOUNT_A, N2, 1)] == 1


def test_walk_progressing_across_the_deadline_is_not_a_failure() -> None:
    """A long walk that moves during the poll is in progress, not stalled: the poll succeeds."""
    api = FakeApi({ACCOUNT_A: {N1: 10, N2: 35}})
    gate = api.hold("page", ACCOUNT_A, N2, 3)  # two pages read, the third held
    polls = Polls(api)
    first = polls.until(
        Snapshot(),
        lambda: polls.poller.delivered() == 1 and api.calls[("page", ACCOUNT_A, N2, 3)] == 1,
        "N1 counted, two pages of the big walk read",
    )
    account = first.account(ACCOUNT_A)
    assert account is not None and account.last_poll_success
    assert N2 not in account.counts and polls.poller.inflight() == 1
    gate.set()
    wait_until(lambda: polls.poller.inflight() == 0, "the big walk ends")
    second = polls.complete(first)
    assert second.account(ACCOUNT_A).counts[N2].objects == 35  # type: ignore[union-attr]


def test_stuck_namespace_list_is_not_requested_again() -> None:
    """A list request hanging past the deadline is not repeated by the next poll (no pile-up)."""
    api = FakeApi({ACCOUNT_A: {N1: 10}})
    gate = api.hold("list", ACCOUNT_A)
    polls = Polls(api)
    listing = lambda: api.calls[("list", ACCOUNT_A)] == 1  # noqa: E731
    first = polls.until(Snapshot(), listing, "the list request")
    second = polls.until(first, listing, "a second poll")
    assert api.calls[("list", ACCOUNT_A)] == 1
    assert not second.account(ACCOUNT_A).last_poll_success  # type: ignore[union-attr]
    gate.set()
    wait_until(polls.idle, "the hung list answers")
    third = polls.complete(second)
    assert third.complete


def test_carried_over_walk_survives_a_failed_list() -> None:
    """A walk that ended after its poll is kept when the next list fails, not walked again."""
    api = FakeApi({ACCOUNT_A: {N1: 10, N2: 20}})
    gate = api.hold("page", ACCOUNT_A, N2, 1)
    polls = Polls(api)
    first = polls.until(
        Snapshot(),
        lambda: polls.poller.delivered() == 1 and api.calls[("page", ACCOUNT_A, N2, 1)] == 1,
        "N1 counted, the slow walk hangs",
    )
    gate.set()
    wait_until(lambda: polls.poller.inflight() == 0, "the slow walk ends after its poll")
    api.fail("list", ACCOUNT_A)
    second = polls.complete(first)
    assert not second.account(ACCOUNT_A).last_poll_success  # type: ignore[union-attr]
    assert set(second.pending) == {(ACCOUNT_A, N2)}  # held for a poll that lists A
    before = api.calls.copy()
    third = polls.complete(second)
    account = third.account(ACCOUNT_A)
    assert account is not None and account.counts[N2].objects == 20
    assert api.calls[("page", ACCOUNT_A, N2, 1)] == before[("page", ACCOUNT_A, N2, 1)]
    assert api.calls[("page", ACCOUNT_A, N1, 1)] == before[("page", ACCOUNT_A, N1, 1)] + 1


def test_cancel_interrupts_a_hanging_discovery() -> None:
    """Shutdown does not wait for GET /accounts: discovery runs on a daemon worker."""
    api = FakeApi({ACCOUNT_A: {N1: 10}})
    gate = api.hold("accounts")
    cancel = threading.Event()
    poller = Poller(api, cancel=cancel, clock=FakeClock())
    threading.Thread(
        target=lambda: (
            wait_until(lambda: api.calls[("accounts",)] == 1, "discovery"),
            cancel.set(),
        ),
        daemon=True,
    ).start()
    try:
        with pytest.raises(Cancelled):
            poller.poll(Snapshot())  # no deadline: only the cancel ends it
    finally:
        gate.set()


# -- discovery mode: an account goes only when a complete GET /accounts answer lacks it ------


def discovery_baseline(**poller_args: Any) -> tuple[FakeApi, Polls, Snapshot]:
    api = FakeApi({ACCOUNT_A: {N1: 10, N2: 250}, ACCOUNT_B: {N3: 20}})
    polls = Polls(api, account_ids=(), **poller_args)
    first = polls.complete(Snapshot())
    assert [a.account_id for a in first.accounts] == [ACCOUNT_A, ACCOUNT_B] and first.complete
    return api, polls, first


def assert_kept(snap: Snapshot, before: Snapshot, *, success: bool | None) -> None:
    """Every account of ``before`` is still exported, with its counts and its poll count."""
    assert [a.account_id for a in snap.accounts] == [a.account_id for a in before.accounts]
    for old in before.accounts:
        new = snap.account(old.account_id)
        assert new is not None and new.counts.keys() == old.counts.keys()
        assert success is None or new.last_poll_success is success
        assert new.polls_success + new.polls_failure == old.polls_success + old.polls_failure + 1
    assert snap.ready


def test_slow_discovery_keeps_every_account() -> None:
    """GET /accounts slower than the poll: the known accounts are polled and kept, every poll."""
    api, polls, snap = discovery_baseline()
    gate = api.hold("accounts")
    for _ in range(3):

        def lists_done() -> bool:  # every walk of this poll ended
            return polls.poller.delivered() == 3

        before, snap = snap, polls.until(snap, lists_done, "the known accounts' lists and walks")
        assert_kept(snap, before, success=True)  # their own lists and counts were read
        assert not snap.complete  # but the account list itself was not confirmed
    assert api.calls[("accounts",)] == 2  # the hung discovery was not asked again
    gate.set()


def test_late_discovery_answer_removes_a_gone_account_next_poll() -> None:
    """A late answer is not thrown away: the next poll starts from it."""
    api, polls, first = discovery_baseline()
    gate = api.hold("accounts")
    second = polls.until(first, lambda: api.calls[("accounts",)] == 2, "the discovery request")
    assert {a.account_id for a in second.accounts} == {ACCOUNT_A, ACCOUNT_B}
    del api.accounts[ACCOUNT_B]  # the held answer, sent after that poll, lacks B
    gate.set()
    wait_until(polls.idle, "the late discovery answer")
    third = polls.complete(second)
    assert [a.account_id for a in third.accounts] == [ACCOUNT_A]


def test_a_block_longer_than_the_poll_keeps_every_account() -> None:
    """Discovery and every list held past the deadline (a rate-limit pause): all series stay."""
    api, polls, first = discovery_baseline()
    gates = [api.hold("accounts"), api.hold("list", ACCOUNT_A), api.hold("list", ACCOUNT_B)]
    held = lambda: api.calls[("list", ACCOUNT_A)] == 2 and api.calls[("list", ACCOUNT_B)] == 2  # noqa: E731
    second = polls.until(first, held, "the held requests")
    assert_kept(second, first, success=False)  # the lists were held by the pause
    open_all(gates)
    wait_until(polls.idle, "the held requests end")
    third = polls.complete(second)
    assert third.complete and third.account(ACCOUNT_A).counts[N2].objects == 250  # type: ignore[union-attr]


def test_walks_holding_every_worker_do_not_hold_up_lists() -> None:
    """With the only walk thread busy on a carried-over walk, discovery and lists still run."""
    api, polls, first = discovery_baseline(max_workers=1)
    gate = api.hold("page", ACCOUNT_A, N2, 1)

    def holding(n: int) -> Callable[[], bool]:  # poll n: discovery, both lists, N1's walk
        return lambda: (
            api.ended[("accounts",)] == n
            and api.ended[("list", ACCOUNT_A)] == n
            and api.ended[("list", ACCOUNT_B)] == n
            and api.calls[("page", ACCOUNT_A, N2, 1)] == 2
        )

    second = polls.until(first, holding(2), "the big walk holds the only walk thread")
    assert polls.poller.inflight() == 1
    third = polls.until(second, holding(3), "the next poll's lists")
    for before, after in ((first, second), (second, third)):
        assert_kept(after, before, success=None)  # B's count could not start: may fail
    assert api.calls[("accounts",)] == 3  # discovery ran every poll
    assert api.requests("list") == 6  # and every account was listed every poll
    gate.set()


def test_workers_follow_the_api_latency() -> None:
    """Walk threads = burst rate x latency x 1.25, between 4 and max_workers."""
    api = FakeApi({ACCOUNT_A: {N1: 10}})
    poller = Poller(api, account_ids=(ACCOUNT_A,), max_workers=64, burst_rate=100)
    assert poller.workers() == 4  # nothing known yet: start small, grow with answers
    api.latency = 0.005
    assert poller.workers() == 4  # a fast API needs few threads
    api.latency = 0.3
    assert poller.workers() == 38  # 100/s x 0.3 s x 1.25: a slow API gets more threads
    api.latency = 10.0
    assert poller.workers() == 64
