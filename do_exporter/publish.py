"""The fold: the previous :class:`Snapshot` and one poll's outcomes make the next snapshot.

Pure: no lock, no clock, no I/O. The executor (:mod:`do_exporter.poller`) gathers what its
tasks delivered (:class:`Gathered`: lists, typed count outcomes, analytics answers, the
walks still running) and calls :func:`publish` once at the end of the poll; nothing flows
back from here to the executor. Count outcomes of an account whose list was not read this
poll wait in ``Snapshot.pending`` for the first poll that lists it.

Each account is folded on its own: an exception while folding one account is caught, the
account keeps its last state and shows a failed poll, and every other account publishes
(the error comes back in :attr:`Published.crashed` for the executor to log).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from .analytics import (
    AccountUsage,
    AnalyticsError,
    AnalyticsState,
    Window,
    advance,
    forget,
    known_namespaces,
    record_failure,
    skip,
)
from .model import (
    AccountPoll,
    AccountSnapshot,
    Counted,
    CountOutcome,
    Failed,
    Gone,
    Key,
    Listed,
    ListOutcome,
    NamespaceCount,
    Snapshot,
)
from .planner import Credential, WalkState
from .ratelimit import Lane

AnalyticsAnswer = AccountUsage | AnalyticsError


@dataclass(frozen=True, slots=True)
class Gathered:
    """What one poll learnt, handed to :func:`publish` when it ends."""

    started_at: float
    owners: Mapping[str, str]  # account -> credential, as the poll started (or grew) it
    discovered: Mapping[str, tuple[str, ...]]  # credential -> complete GET /accounts answer
    lists: Mapping[str, ListOutcome]  # account -> its list's outcome (absent: did not end)
    listed_at: Mapping[str, float]  # account -> when its list (or its last count) ended
    due: Mapping[str, frozenset[str]]  # account -> namespaces whose walk was to start
    counts: Mapping[Key, CountOutcome] = field(default_factory=dict)  # delivered this poll
    walks: Mapping[Key, WalkState] = field(default_factory=dict)  # still running at the end
    deferred: frozenset[str] = frozenset()  # credentials whose plan binds (counts may wait)
    finished_at: float = 0.0
    finished_all: bool = True  # every task of the poll ended before its deadline
    # due counts that must start even when the plan binds (the cheap ones, new ones)
    must_start: frozenset[Key] = frozenset()
    # account -> the window asked for and its answer (None: no answer by the deadline)
    analytics: Mapping[str, tuple[Window, AnalyticsAnswer | None]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Published:
    snapshot: Snapshot
    stalled: tuple[str, ...] = ()  # accounts whose due counts neither ended nor moved
    crashed: tuple[tuple[str, Exception], ...] = ()  # accounts whose fold raised


def publish(
    previous: Snapshot,
    credentials: Sequence[Credential],
    gathered: Gathered,
    *,
    stall_seconds: float,
) -> Published:
    """The next snapshot (pure): the staleness policy plus the account rule.

    - Accounts: the credential's complete discovery answer decides which stay; without one
      (late, failed), every account polled before stays, marked failed if not listed.
    - An account whose list failed or did not end keeps its state (``last_poll_success 0``);
      its count outcomes wait in ``pending`` for a poll that lists it.
    - A walk is stalled when it read no page since the poll began, unless its pages queue in
      the ``BULK`` lane (held back on purpose) and one came within ``stall_seconds``; and
      when it has run longer than ``stall_seconds`` over a namespace that has no count yet
      (no series at all: the poll must not look healthy). A due count that could not start
      fails the poll unless the credential's plan binds.
    """
    owners = kept_accounts(previous, credentials, gathered)
    outcomes: dict[str, dict[str, CountOutcome]] = {}
    for (account_id, ns_id), outcome in (*previous.pending.items(), *gathered.counts.items()):
        if account_id in owners:  # else its account is gone: dropped
            outcomes.setdefault(account_id, {})[ns_id] = outcome
    accounts: list[AccountSnapshot] = []
    analytics: dict[str, AnalyticsState] = {}
    pending: dict[Key, CountOutcome] = {}
    stalled: list[str] = []
    crashed: list[tuple[str, Exception]] = []
    for account_id, cred in owners.items():
        before = previous.account(account_id)
        found = outcomes.get(account_id, {})
        listed = gathered.lists.get(account_id)
        if not isinstance(listed, Listed):
            pending.update(((account_id, ns_id), o) for ns_id, o in found.items())
        try:
            snap, usage, stall = fold_account(
                before, previous.analytics.get(account_id), account_id, cred, found, gathered,
                stall_seconds=stall_seconds,
            )  # fmt: skip
        except Exception as exc:  # a bug or bad data in one account never stops the others
            crashed.append((account_id, exc))
            snap, stall = _crashed(before, account_id, cred), False
            usage = previous.analytics.get(account_id)
        accounts.append(snap)
        if usage is not None:
            analytics[account_id] = usage
        if stall:
            stalled.append(account_id)
    snapshot = Snapshot(
        accounts=tuple(accounts),
        generation=previous.generation + 1,
        full_refresh_seconds=full_refresh(accounts),
        complete=_complete(credentials, gathered, accounts, owners) and not crashed,
        analytics=MappingProxyType(analytics),
        pending=MappingProxyType(pending),
    )
    return Published(snapshot, tuple(stalled), tuple(crashed))


def _complete(
    credentials: Sequence[Credential],
    gathered: Gathered,
    accounts: Sequence[AccountSnapshot],
    owners: Mapping[str, str],
) -> bool:
    """The poll read every account list, namespace list and count it set out to."""
    return (
        all(c.name in gathered.discovered for c in credentials if c.discovers)
        and gathered.finished_all
        and all(a.last_poll_success for a in accounts)
        and not any(account_id in owners for account_id, _ in gathered.walks)
    )


def _crashed(before: AccountSnapshot | None, account_id: str, cred: str) -> AccountSnapshot:
    """An account whose fold raised: its last state, with a failed poll."""
    prev = before or AccountSnapshot(account_id=account_id)
    return replace(
        prev, credential=cred, last_poll_success=False, polls_failure=prev.polls_failure + 1
    )


def kept_accounts(
    previous: Snapshot, credentials: Sequence[Credential], gathered: Gathered
) -> dict[str, str]:
    """Each account the next snapshot holds, with its credential (insertion ordered).

    A credential's complete discovery answer that lacks an account it polled hands the
    account to another credential that reaches it (series and analytics kept), else the
    account is gone. Linear in accounts: every membership test is a set lookup.
    """
    by_name = {c.name: c for c in credentials}
    reaches = {
        c.name: frozenset(c.account_ids) | frozenset(gathered.discovered.get(c.name, ()))
        for c in credentials
    }
    answers = {name: frozenset(ids) for name, ids in gathered.discovered.items()}
    configured = {c.name: frozenset(c.account_ids) for c in credentials}
    kept: dict[str, str] = {}
    candidates = (
        (a.account_id, gathered.owners.get(a.account_id, a.credential)) for a in previous.accounts
    )
    for account_id, cred in (*candidates, *gathered.owners.items()):
        if account_id in kept or cred not in by_name:
            continue  # seen, or its credential is no longer configured
        answer = answers.get(cred)
        if answer is not None and account_id not in answer and account_id not in configured[cred]:
            other = next(
                (o.name for o in credentials if o.name != cred and account_id in reaches[o.name]),
                None,
            )
            if other is None:
                continue
            cred = other
        kept[account_id] = cred
    return kept


def fold_account(
    before: AccountSnapshot | None,
    usage: AnalyticsState | None,
    account_id: str,
    cred: str,
    outcomes: Mapping[str, CountOutcome],
    gathered: Gathered,
    *,
    stall_seconds: float,
) -> tuple[AccountSnapshot, AnalyticsState | None, bool]:
    """One account's next state, its analytics and whether its counts stalled."""
    listed = gathered.lists.get(account_id)
    counts: dict[str, CountOutcome] = {}
    stalled = False
    if isinstance(listed, Listed):
        listed_ids = {ns.id for ns in listed.namespaces}
        counts = {ns_id: o for ns_id, o in outcomes.items() if ns_id in listed_ids}
        stalled = _stalled(before, account_id, cred, listed, counts, gathered, stall_seconds)
    poll = AccountPoll(
        account_id=account_id,
        started_at=gathered.started_at,
        finished_at=gathered.listed_at.get(account_id, gathered.finished_at),
        listed=listed if isinstance(listed, Listed) else None,
        counts=counts,
        incomplete=stalled,
    )
    account = next_account(before, poll, credential=cred)
    # Usage rows only for namespaces the inventory holds: the fresh list, else the last one
    # (an answer that lands in a poll whose list failed never brings a deleted one back).
    known = frozenset(ns.id for ns in account.namespaces) if account.namespaces_listed else None
    usage = next_analytics(
        usage, account_id, gathered.analytics.get(account_id), now=gathered.finished_at,
        namespace_ids=known,
    )  # fmt: skip
    return account, usage, stalled


def _stalled(
    before: AccountSnapshot | None,
    account_id: str,
    cred: str,
    listed: Listed,
    counts: Mapping[str, CountOutcome],
    gathered: Gathered,
    stall_seconds: float,
) -> bool:
    """Whether a due count of a listed account neither ended nor moved (see :func:`publish`)."""
    now = gathered.finished_at
    due = gathered.due.get(account_id, frozenset())
    deferred = cred in gathered.deferred
    for ns in listed.namespaces:
        if ns.id in counts:
            continue
        walk = gathered.walks.get((account_id, ns.id))
        if walk is None:
            if ns.id in due and (not deferred or (account_id, ns.id) in gathered.must_start):
                return True  # due, never started, and not deferred on purpose
            continue
        if walk.pages == 0 or walk.progressed_at < gathered.started_at:
            held_on_purpose = walk.lane is Lane.BULK and now - walk.progressed_at <= stall_seconds
            if not held_on_purpose:
                return True
        never_counted = before is None or ns.id not in before.counts
        if never_counted and now - walk.started_at > stall_seconds:
            # No series at all for that long: say so (an endless cursor on a new namespace,
            # or a first walk far beyond the budget).
            return True
    return False


def next_account(
    previous: AccountSnapshot | None, poll: AccountPoll, *, credential: str | None = None
) -> AccountSnapshot:
    """Apply one poll to an account's previous state (pure; the staleness policy).

    - Namespace list not read: keep everything, mark the poll failed.
    - A namespace missing from the new list, or gone (404) while counting: its series go.
    - A count that failed, or was not due: the last complete count stays, with its time.
    - The poll succeeds when the list and every count it attempted succeeded, and nothing
      due was left stalled (``incomplete``).
    """
    prev = previous or AccountSnapshot(account_id=poll.account_id)
    cred = credential or prev.credential
    duration = max(0.0, poll.finished_at - poll.started_at)
    if poll.listed is None:
        return replace(
            prev,
            last_poll_success=False,
            last_poll_duration=duration,
            polls_failure=prev.polls_failure + 1,
            credential=cred,
        )
    namespaces = tuple(
        ns for ns in poll.listed.namespaces if not isinstance(poll.counts.get(ns.id), Gone)
    )
    gone = [ns for ns in poll.listed.namespaces if isinstance(poll.counts.get(ns.id), Gone)]
    counts: dict[str, NamespaceCount] = {}
    failed = False
    for ns in namespaces:
        outcome = poll.counts.get(ns.id)
        if isinstance(outcome, Counted):
            count = outcome.count
            completed = count.completed_at or poll.finished_at
            last = prev.counts.get(ns.id)
            counts[ns.id] = NamespaceCount(
                count.objects,
                count.with_stored_data,
                completed,
                refresh_seconds=completed - last.completed_at if last else None,
            )
            continue
        failed |= isinstance(outcome, Failed)
        if ns.id in prev.counts:
            counts[ns.id] = prev.counts[ns.id]
    success = not failed and not poll.incomplete
    return AccountSnapshot(
        account_id=prev.account_id,
        namespaces=namespaces,
        counts=MappingProxyType(counts),
        last_poll_success=success,
        last_success_at=poll.finished_at if success else prev.last_success_at,
        last_poll_duration=duration,
        polls_success=prev.polls_success + (1 if success else 0),
        polls_failure=prev.polls_failure + (0 if success else 1),
        namespaces_listed=True,
        credential=cred,
        namespaces_total=_less(poll.listed.total, len(gone)),
        sqlite_total=_less(poll.listed.sqlite, sum(1 for ns in gone if ns.use_sqlite)),
    )


def _less(total: int | None, gone: int) -> int | None:
    return None if total is None else total - gone


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
    Namespaces not in ``namespace_ids`` (gone from the inventory, or filtered out) lose
    their series.
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
    "AnalyticsAnswer",
    "Gathered",
    "Published",
    "fold_account",
    "full_refresh",
    "kept_accounts",
    "next_account",
    "next_analytics",
    "publish",
]
