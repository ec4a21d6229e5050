"""Immutable data the poller produces and the collector reads.

A :class:`Snapshot` is replaced whole after every poll; nothing in it is ever mutated, so a
scrape can read it from any thread without a lock. :func:`next_account` is the pure rule that
turns the previous state of an account plus what one poll learnt into its next state; it is
where the staleness policy of docs/architecture.md (the data path of one value) lives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # analytics imports this module
    from .analytics import AnalyticsState


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Namespace:
    """One Durable Objects namespace as the API lists it (missing fields are ``None``)."""

    id: str
    name: str | None = None
    class_name: str | None = None
    script: str | None = None
    use_sqlite: bool | None = None


@dataclass(frozen=True, slots=True)
class ObjectCount:
    """A complete walk over one namespace's objects."""

    objects: int
    with_stored_data: int
    pages: int = 0
    completed_at: float | None = None  # Unix time the walk ended (None: the poll's end)


@dataclass(frozen=True, slots=True)
class NamespaceCount:
    """The last complete count of a namespace, and when it completed (Unix time)."""

    objects: int
    with_stored_data: int
    completed_at: float
    refresh_seconds: float | None = None  # time since the count before this one completed


def _frozen_counts() -> Mapping[str, NamespaceCount]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """What we know about one account after the latest poll."""

    account_id: str
    namespaces: tuple[Namespace, ...] = ()
    counts: Mapping[str, NamespaceCount] = field(default_factory=_frozen_counts)
    last_poll_success: bool = False
    last_success_at: float | None = None
    last_poll_duration: float | None = None
    polls_success: int = 0
    polls_failure: int = 0
    namespaces_listed: bool = False
    credential: str = "default"  # the name of the credential that polls it

    @property
    def sqlite_namespaces(self) -> int:
        return sum(1 for ns in self.namespaces if ns.use_sqlite)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole exported state: replaced atomically after each poll."""

    accounts: tuple[AccountSnapshot, ...] = ()
    generation: int = 0
    full_refresh_seconds: float | None = None
    complete: bool = False  # the last poll read every account, namespace list and count
    # Usage analytics per account (absent: analytics off, or not asked yet).
    analytics: Mapping[str, AnalyticsState] = field(default_factory=dict)
    _by_id: Mapping[str, AccountSnapshot] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {a.account_id: a for a in self.accounts})

    def account(self, account_id: str) -> AccountSnapshot | None:
        return self._by_id.get(account_id)

    @property
    def ready(self) -> bool:
        """True after a poll that read some account's namespaces, or found no account."""
        return self.generation > 0 and (
            any(a.namespaces_listed for a in self.accounts) or self.complete
        )


# Outcome of counting one namespace in a poll.
GONE = "gone"  # the namespace no longer exists (404 between listing and counting)


@dataclass(frozen=True, slots=True)
class AccountPoll:
    """What one poll learnt about one account.

    ``namespaces`` is ``None`` when the namespace list could not be read. ``counts`` maps a
    namespace id to its fresh count, to ``None`` when counting failed, or to :data:`GONE`.
    Namespaces not in ``counts`` were not due, or are still being counted; ``incomplete``
    says some of those should have been done and were not (the poll then failed).
    """

    account_id: str
    started_at: float
    finished_at: float
    namespaces: tuple[Namespace, ...] | None
    counts: Mapping[str, ObjectCount | str | None] = field(default_factory=dict)
    incomplete: bool = False  # a due count neither finished nor progressed


def next_account(
    previous: AccountSnapshot | None, poll: AccountPoll, *, credential: str | None = None
) -> AccountSnapshot:
    """Apply one poll to an account's previous state (pure; the staleness policy).

    - Namespace list failed: keep everything, mark the poll failed.
    - A namespace missing from the new list, or gone (404) while counting: its series go.
    - A count that failed, or was not due: the last complete count stays, with its time.
    - The poll succeeds when the list and every count it attempted succeeded, and nothing
      due was left stalled (``incomplete``).
    """
    prev = previous or AccountSnapshot(account_id=poll.account_id)
    cred = credential or prev.credential
    duration = max(0.0, poll.finished_at - poll.started_at)
    if poll.namespaces is None:
        return AccountSnapshot(
            account_id=prev.account_id,
            namespaces=prev.namespaces,
            counts=prev.counts,
            last_poll_success=False,
            last_success_at=prev.last_success_at,
            last_poll_duration=duration,
            polls_success=prev.polls_success,
            polls_failure=prev.polls_failure + 1,
            namespaces_listed=prev.namespaces_listed,
            credential=cred,
        )

    gone = {ns_id for ns_id, outcome in poll.counts.items() if outcome == GONE}
    namespaces = tuple(ns for ns in poll.namespaces if ns.id not in gone)
    counts: dict[str, NamespaceCount] = {}
    failed = False
    for ns in namespaces:
        outcome = poll.counts.get(ns.id)
        if isinstance(outcome, ObjectCount):
            completed = outcome.completed_at or poll.finished_at
            before = prev.counts.get(ns.id)
            counts[ns.id] = NamespaceCount(
                outcome.objects,
                outcome.with_stored_data,
                completed,
                refresh_seconds=completed - before.completed_at if before else None,
            )
            continue
        if ns.id in poll.counts:  # attempted and failed
            failed = True
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
    )
