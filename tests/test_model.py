"""The staleness policy: how one poll changes an account's state (pure, no I/O).

The data types are in :mod:`do_exporter.model`, the rule (``next_account``) in the fold.
"""

from __future__ import annotations

from do_exporter.model import (
    AccountPoll,
    AccountSnapshot,
    Counted,
    CountOutcome,
    Failed,
    Gone,
    Listed,
    Namespace,
    ObjectCount,
)
from do_exporter.publish import next_account

A = "a" * 32
N1, N2 = Namespace("n1", "one"), Namespace("n2", "two", use_sqlite=True)


def poll(
    namespaces: tuple[Namespace, ...] | None,
    counts: dict[str, CountOutcome],
    start: float = 100.0,
    end: float = 110.0,
) -> AccountPoll:
    return AccountPoll(A, start, end, None if namespaces is None else Listed(namespaces), counts)


def count(objects: int, with_data: int) -> Counted:
    return Counted(ObjectCount(objects, with_data))


def first() -> AccountSnapshot:
    return next_account(None, poll((N1, N2), {"n1": count(5, 2), "n2": count(7, 0)}))


def test_complete_poll_sets_counts_and_success() -> None:
    state = first()
    assert state.last_poll_success and state.last_success_at == 110.0
    assert state.last_poll_duration == 10.0
    assert (state.counts["n1"].objects, state.counts["n1"].with_stored_data) == (5, 2)
    assert state.counts["n2"].completed_at == 110.0
    assert (state.polls_success, state.polls_failure) == (1, 0)
    assert state.sqlite_namespaces == 1


def test_failed_count_keeps_last_complete_value_and_its_time() -> None:
    """A namespace whose count failed keeps its last complete count and timestamp."""
    state = next_account(
        first(), poll((N1, N2), {"n1": Failed("api"), "n2": count(9, 1)}, 200.0, 210.0)
    )
    assert state.counts["n1"].objects == 5 and state.counts["n1"].completed_at == 110.0
    assert state.counts["n2"].objects == 9 and state.counts["n2"].completed_at == 210.0
    assert not state.last_poll_success
    assert state.last_success_at == 110.0
    assert (state.polls_success, state.polls_failure) == (1, 1)


def test_failed_namespace_list_keeps_everything() -> None:
    """When the list fails, the account keeps its last snapshot and shows the failure."""
    before = first()
    state = next_account(before, poll(None, {}, 200.0, 203.0))
    assert state.namespaces == before.namespaces and state.counts == before.counts
    assert not state.last_poll_success and state.last_poll_duration == 3.0
    assert state.namespaces_listed


def test_namespace_gone_from_list_loses_its_series() -> None:
    state = next_account(first(), poll((N2,), {"n2": count(7, 0)}))
    assert [n.id for n in state.namespaces] == ["n2"]
    assert "n1" not in state.counts
    assert state.last_poll_success


def test_namespace_deleted_while_counting_is_gone_not_failed() -> None:
    """A 404 between listing and counting removes the namespace; the poll still succeeds."""
    state = next_account(first(), poll((N1, N2), {"n1": Gone(), "n2": count(1, 1)}))
    assert [n.id for n in state.namespaces] == ["n2"] and "n1" not in state.counts
    assert state.last_poll_success


def test_namespace_not_due_keeps_its_count_without_failing() -> None:
    """A namespace left out of this poll's counts (not due) keeps its value."""
    state = next_account(first(), poll((N1, N2), {"n2": count(8, 0)}, 300.0, 301.0))
    assert state.counts["n1"].completed_at == 110.0
    assert state.last_poll_success


def test_first_poll_failure_has_no_counts() -> None:
    state = next_account(None, poll(None, {}))
    assert not state.namespaces_listed and not state.counts
    assert (state.polls_success, state.polls_failure) == (0, 1)


def test_filtered_list_keeps_the_totals_of_everything_listed() -> None:
    """The namespace filter: series only for kept namespaces, totals for all listed ones."""
    listed = Listed((N1,), total=5, sqlite=2)
    state = next_account(None, AccountPoll(A, 0.0, 1.0, listed, {"n1": count(3, 1)}))
    assert [n.id for n in state.namespaces] == ["n1"]
    assert (state.namespace_count, state.sqlite_namespaces) == (5, 2)
    gone = next_account(state, AccountPoll(A, 2.0, 3.0, listed, {"n1": Gone()}))
    assert gone.namespaces == () and gone.namespace_count == 4


def test_model_imports_no_logic() -> None:
    """Data types import nothing of the package (no circle through analytics)."""
    import ast
    import inspect

    import do_exporter.model as model

    tree = ast.parse(inspect.getsource(model))
    relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0]
    assert relative == []
