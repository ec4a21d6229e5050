"""The fold: previous snapshot + one poll's outcomes -> next snapshot (pure, no I/O).

Every test builds the outcomes a poll's tasks would deliver (``Listed``, ``Counted``,
``Gone``, ``Failed``) and asserts on the snapshot :func:`publish` returns.
"""

from __future__ import annotations

from types import MappingProxyType

import pytest

from do_exporter.model import (
    AccountPoll,
    Counted,
    Failed,
    Gone,
    Listed,
    Namespace,
    ObjectCount,
    Snapshot,
)
from do_exporter.planner import Credential, WalkState
from do_exporter.publish import Gathered, full_refresh, kept_accounts, next_account, publish
from do_exporter.ratelimit import Lane
from tests.test_planner import DISCOVER, A, B, account, snapshot


def listed(*names: str) -> Listed:
    return Listed(tuple(Namespace(n) for n in names))


def counted(objects: int) -> Counted:
    return Counted(ObjectCount(objects, 0))


def gathered(**kwargs: object) -> Gathered:
    base: dict[str, object] = {
        "started_at": 1000.0,
        "owners": {},
        "discovered": {},
        "lists": {},
        "listed_at": {},
        "due": {},
        "finished_at": 1010.0,
    }
    base.update(kwargs)
    return Gathered(**base)  # type: ignore[arg-type]


def test_an_account_moves_to_the_credential_that_still_reaches_it() -> None:
    """One credential's complete answer lacks it, another's has it: kept, not dropped."""
    previous = snapshot(account(A, {"n": 10}, credential="one"))
    creds = [Credential("one"), Credential("two")]
    snap = publish(
        previous,
        creds,
        gathered(owners={A: "one"}, discovered={"one": (), "two": (A,)}),
        stall_seconds=600,
    ).snapshot
    moved = snap.account(A)
    assert moved is not None and moved.credential == "two" and moved.counts["n"].objects == 10


def test_a_cheap_count_that_never_started_fails_even_when_the_plan_binds() -> None:
    previous = snapshot(account(A, {"n": 10}))
    result = publish(
        previous,
        [Credential("default", (A,))],
        gathered(
            owners={A: "default"},
            lists={A: listed("n")},
            due={A: frozenset({"n"})},
            deferred=frozenset({"default"}),
            must_start=frozenset({(A, "n")}),
        ),
        stall_seconds=600,
    )
    assert not result.snapshot.accounts[0].last_poll_success


# -- accounts and stalls -------------------------------------------------------------------


def test_a_late_discovery_keeps_every_account_and_marks_the_poll_failed() -> None:
    """The bug: GET /accounts not back by the deadline emptied the snapshot. Now it keeps all."""
    previous = snapshot(account(A, {"n": 10}), account(B, {"m": 20}))
    result = publish(
        previous,
        [DISCOVER],
        gathered(owners={A: "default", B: "default"}),  # no list, no discovery answer in time
        stall_seconds=600,
    )
    snap = result.snapshot
    assert [a.account_id for a in snap.accounts] == [A, B]
    for acc, before in zip(snap.accounts, previous.accounts, strict=True):
        assert acc.counts == before.counts and acc.namespaces == before.namespaces
        assert not acc.last_poll_success and acc.polls_failure == 1 and acc.polls_success == 3
    assert snap.ready and not snap.complete


def test_a_failed_discovery_keeps_every_account() -> None:
    previous = snapshot(account(A, {"n": 10}))
    snap = publish(
        previous,
        [DISCOVER],
        gathered(
            owners={A: "default"},
            lists={A: listed("n")},
            due={A: frozenset()},
            counts={(A, "n"): counted(11)},
        ),
        stall_seconds=600,
    ).snapshot
    acc = snap.account(A)
    assert acc is not None and acc.last_poll_success and acc.counts["n"].objects == 11
    assert not snap.complete  # the account list itself could not be confirmed


def test_an_account_goes_only_when_a_complete_answer_lacks_it() -> None:
    previous = snapshot(account(A, {"n": 10}), account(B, {"m": 20}))
    snap = publish(
        previous,
        [DISCOVER],
        gathered(
            owners={A: "default", B: "default"},
            discovered={"default": (A,)},
            lists={A: listed("n")},
            due={A: frozenset({"n"})},
            counts={(A, "n"): counted(12)},
        ),
        stall_seconds=600,
    ).snapshot
    assert [a.account_id for a in snap.accounts] == [A]
    assert snap.complete


def test_finished_walks_wait_for_a_poll_that_lists_their_account() -> None:
    """A walk that ended while its account's list failed waits in the snapshot, unexported."""
    previous = snapshot(account(A, {"n": 10}))
    failed = publish(
        previous,
        [Credential("default", (A,))],
        gathered(owners={A: "default"}, lists={A: Failed()}, counts={(A, "n"): counted(12)}),
        stall_seconds=600,
    )
    assert failed.snapshot.pending == {(A, "n"): counted(12)}
    assert failed.snapshot.account(A).counts["n"].objects == 10  # type: ignore[union-attr]
    ok = publish(
        failed.snapshot,
        [Credential("default", (A,))],
        gathered(owners={A: "default"}, lists={A: listed("n")}, due={A: frozenset()}),
        stall_seconds=600,
    )
    assert ok.snapshot.pending == {}
    assert ok.snapshot.account(A).counts["n"].objects == 12  # type: ignore[union-attr]


def walk(progressed_at: float, pages: int, lane: Lane) -> WalkState:
    return WalkState(started_at=0.0, progressed_at=progressed_at, pages=pages, lane=lane)


@pytest.mark.parametrize(
    ("state", "stalled"),
    [
        (walk(1005.0, 40, Lane.FRESH), False),  # a page this poll: moving
        (walk(900.0, 40, Lane.FRESH), True),  # no page this poll: a block or a hung API
        (walk(1005.0, 0, Lane.FRESH), True),  # its first request never answered
        (walk(800.0, 400, Lane.BULK), False),  # held back on purpose, recently moved
        (walk(100.0, 400, Lane.BULK), True),  # held back, but silent for too long
    ],
)
def test_walks_in_flight_fail_the_poll_only_when_stalled(state: WalkState, stalled: bool) -> None:
    previous = snapshot(account(A, {"n": 10, "big": 4_000_000}))
    result = publish(
        previous,
        [Credential("default", (A,))],
        gathered(
            owners={A: "default"},
            lists={A: listed("n", "big")},
            due={A: frozenset({"n"})},
            walks={(A, "big"): state},
            counts={(A, "n"): counted(11)},
        ),
        stall_seconds=600,
    )
    acc = result.snapshot.account(A)
    assert acc is not None and acc.last_poll_success is not stalled
    assert result.stalled == ((A,) if stalled else ())
    assert acc.counts["big"].objects == 4_000_000  # the last complete count stays


def test_a_long_first_walk_of_a_namespace_without_series_fails_the_poll() -> None:
    """A new namespace whose first walk runs for long (an endless cursor) is not healthy."""
    previous = snapshot(account(A, {"n": 10}, extra=("new",)))
    creds = [Credential("default", (A,))]

    def poll(started_at: float) -> bool:
        walk = WalkState(started_at=started_at, progressed_at=1005.0, pages=900)
        result = publish(
            previous,
            creds,
            gathered(
                owners={A: "default"},
                lists={A: listed("n", "new")},
                walks={(A, "new"): walk},
                counts={(A, "n"): counted(11)},
            ),
            stall_seconds=600,
        )
        return result.snapshot.accounts[0].last_poll_success

    assert poll(started_at=800.0)  # moving, for 210 s: fine
    assert not poll(started_at=100.0)  # moving, but 910 s without any count: failing


def test_a_due_count_that_never_started_fails_unless_the_budget_deferred_it() -> None:
    previous = snapshot(account(A, {"n": 10}))
    args = {
        "owners": {A: "default"},
        "lists": {A: listed("n")},
        "due": {A: frozenset({"n"})},
        "finished_all": False,
    }
    creds = [Credential("default", (A,))]
    failed = publish(previous, creds, gathered(**args), stall_seconds=600)
    assert not failed.snapshot.accounts[0].last_poll_success
    deferred = publish(
        previous,
        creds,
        gathered(**args, deferred=frozenset({"default"})),
        stall_seconds=600,
    )
    assert deferred.snapshot.accounts[0].last_poll_success
    assert not deferred.snapshot.complete


def test_refresh_seconds_and_full_refresh() -> None:
    """Each new count records the time since the previous one; the gauge is the slowest."""
    ns = Listed((Namespace("x"), Namespace("y")))
    state = next_account(None, AccountPoll(A, 0, 10, ns, {"x": counted(1), "y": counted(1)}))
    assert full_refresh([state]) is None  # nothing refreshed twice yet
    state = next_account(state, AccountPoll(A, 300, 310, ns, {"x": counted(2)}))
    y = Counted(ObjectCount(5, 0, completed_at=905.0))
    state = next_account(state, AccountPoll(A, 600, 610, ns, {"x": counted(3), "y": y}))
    assert state.counts["x"].refresh_seconds == 300
    assert state.counts["y"].refresh_seconds == 895  # 10 -> 905: walked across intervals
    assert full_refresh([state]) == 895


# -- one account's fold never stops the others ----------------------------------------------


def test_a_crash_in_one_accounts_fold_never_stops_the_others() -> None:
    """Data that makes A's fold raise: A keeps its last state and shows failure; B publishes."""
    previous = snapshot(account(A, {"n": 10}), account(B, {"m": 20}))
    bad = Counted(ObjectCount(11, 0, completed_at="yesterday"))  # type: ignore[arg-type]
    result = publish(
        previous,
        [Credential("default", (A, B))],
        gathered(
            owners={A: "default", B: "default"},
            lists={A: listed("n"), B: listed("m")},
            due={A: frozenset({"n"}), B: frozenset({"m"})},
            counts={(A, "n"): bad, (B, "m"): counted(21)},
        ),
        stall_seconds=600,
    )
    a, b = result.snapshot.account(A), result.snapshot.account(B)
    assert b is not None and b.last_poll_success and b.counts["m"].objects == 21
    assert a is not None and a.counts == previous.accounts[0].counts
    assert not a.last_poll_success and (a.polls_success, a.polls_failure) == (3, 1)
    assert [(acc, type(exc)) for acc, exc in result.crashed] == [(A, TypeError)]
    assert not result.snapshot.complete and result.snapshot.generation == 6


def test_outcomes_of_a_gone_account_are_dropped() -> None:
    """A complete discovery answer without A: A and its pending outcomes go."""
    previous = Snapshot(
        accounts=(account(A, {"n": 10}), account(B, {"m": 20})),
        pending=MappingProxyType({(A, "n"): counted(11)}),
    )
    snap = publish(
        previous,
        [DISCOVER],
        gathered(
            owners={A: "default", B: "default"},
            discovered={"default": (B,)},
            lists={B: listed("m")},
            counts={(A, "x"): Gone()},
        ),
        stall_seconds=600,
    ).snapshot
    assert [a.account_id for a in snap.accounts] == [B] and snap.pending == {}


def test_kept_accounts_is_linear() -> None:
    """20,000 discovered accounts: set lookups, not scans (a quadratic rule takes minutes)."""
    ids = tuple(f"{i:032x}" for i in range(20_000))
    previous = snapshot(*(account(i, {}) for i in ids))
    kept = kept_accounts(
        previous,
        [DISCOVER, Credential("other", ids[:10])],
        gathered(owners=dict.fromkeys(ids, "default"), discovered={"default": ids[1:]}),
    )
    assert len(kept) == 20_000 and kept[ids[0]] == "other"
