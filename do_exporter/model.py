"""Immutable data the poll produces and the metric builders read; data types only, no logic.

A :class:`Snapshot` is replaced whole after every poll; nothing in it is ever mutated, so a
scrape can read it from any thread without a lock. The poll's tasks deliver typed outcomes
(:class:`Listed`, :class:`Counted`, :class:`Gone`, :class:`Failed`); the fold in
:mod:`do_exporter.publish` turns the previous snapshot and those outcomes into the next one
(docs/architecture.md, "The data path of one value"). This module imports no other module
of the package, so every module may import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeAlias

Key: TypeAlias = tuple[str, str]  # (account id, namespace id)

# One account's usage analytics state (``analytics.AnalyticsState``). Typed loosely on
# purpose: analytics imports this module for :class:`Namespace`, and a data module imports
# no logic, so the snapshot only carries the values the analytics fold produced.
UsageState: TypeAlias = Any


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
    # Every namespace the list held, filtered out or not (None: all are in ``namespaces``).
    namespaces_total: int | None = None
    sqlite_total: int | None = None

    @property
    def namespace_count(self) -> int:
        """Namespaces the account's list held (the namespace filter aside)."""
        return len(self.namespaces) if self.namespaces_total is None else self.namespaces_total

    @property
    def sqlite_namespaces(self) -> int:
        """Namespaces on the SQLite backend the account's list held (filter aside)."""
        if self.sqlite_total is not None:
            return self.sqlite_total
        return sum(1 for ns in self.namespaces if ns.use_sqlite)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole exported state: replaced atomically after each poll."""

    accounts: tuple[AccountSnapshot, ...] = ()
    generation: int = 0
    full_refresh_seconds: float | None = None
    complete: bool = False  # the last poll read every account, namespace list and count
    # Usage analytics per account (absent: analytics off, or not asked yet).
    analytics: Mapping[str, UsageState] = field(default_factory=dict)
    # Count outcomes whose account was not listed in their poll: applied (or dropped) by the
    # first poll that lists it again; never exported.
    pending: Mapping[Key, CountOutcome] = field(default_factory=dict)
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


# -- what the poll's tasks deliver ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listed:
    """A namespace list that was read: the namespaces kept by the namespace filter, and the
    totals of everything listed (None: nothing was filtered out)."""

    namespaces: tuple[Namespace, ...]
    total: int | None = None
    sqlite: int | None = None


@dataclass(frozen=True, slots=True)
class Counted:
    """A complete walk over a namespace's objects (``count.completed_at`` set)."""

    count: ObjectCount


@dataclass(frozen=True, slots=True)
class Gone:
    """The namespace no longer exists (a 404 between listing and counting)."""


@dataclass(frozen=True, slots=True)
class Failed:
    """A list or a walk that failed; ``reason`` is for the log (never a token)."""

    reason: str = ""


CountOutcome: TypeAlias = Counted | Gone | Failed
ListOutcome: TypeAlias = Listed | Failed


@dataclass(frozen=True, slots=True)
class AccountPoll:
    """What one poll learnt about one account.

    ``listed`` is the namespace list's outcome (None: not read in this poll). ``counts``
    maps a namespace id to its count outcome; namespaces not in it were not due, or are
    still being counted; ``incomplete`` says some of those should have been done and were
    not (the poll then failed).
    """

    account_id: str
    started_at: float
    finished_at: float
    listed: Listed | None
    counts: Mapping[str, CountOutcome] = field(default_factory=lambda: MappingProxyType({}))
    incomplete: bool = False  # a due count neither finished nor progressed
