"""What one analytics answer holds, in the API's own units (data types only, no logic
beyond adding and merging)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any


def frozen(d: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """A read-only copy of ``d``."""
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True, slots=True)
class NamespaceUsage:
    """Sums for one namespace over one or more windows, in the API's own units.

    Integers stay integers (µs, counts, bytes), so cumulative counters never drift; the
    ``*_seconds`` properties convert at the edge.
    """

    requests: int = 0
    errors: int = 0
    wall_time_us: int = 0
    response_body_bytes: int = 0
    cpu_time_us: int = 0
    active_time_us: int = 0
    duration_gb_s: float = 0.0
    rows_read: int = 0
    rows_written: int = 0
    storage_read_units: int = 0
    storage_write_units: int = 0
    storage_deletes: int = 0
    websocket_inbound: int = 0
    websocket_outbound: int = 0
    subrequests: int = 0
    exceeded_cpu: int = 0
    exceeded_memory: int = 0
    fatal_internal: int = 0

    def __add__(self, other: NamespaceUsage) -> NamespaceUsage:
        return NamespaceUsage(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(NamespaceUsage))
        )

    @property
    def wall_time_seconds(self) -> float:
        return self.wall_time_us / 1e6

    @property
    def cpu_time_seconds(self) -> float:
        return self.cpu_time_us / 1e6

    @property
    def active_time_seconds(self) -> float:
        return self.active_time_us / 1e6


@dataclass(frozen=True, slots=True)
class Latency:
    """A namespace's wall-time percentiles and slowest request over one window (µs).

    ``quantiles`` maps ``"0.5"``, ``"0.9"``, ``"0.99"``, ``"0.999"`` to microseconds.
    """

    quantiles: Mapping[str, float]
    max_us: float


@dataclass(frozen=True, slots=True)
class HotObject:
    """One of the busiest objects of an account over one window: ``value`` is its requests
    (``hotRequests``) or its CPU time in µs (``hotCpu``)."""

    namespace_id: str
    object_id: str
    value: int


@dataclass(frozen=True, slots=True)
class AccountUsage:
    """One complete answer (all its pages) for one account and one window.

    ``websockets`` is the busiest single object's peak of active WebSocket connections per
    namespace in the window (periodic rows are per-object samples: ``max`` grouped by
    namespace is not a total); ``stored_bytes`` the max SQLite storage per namespace;
    ``account_stored_bytes`` the account's latest hourly storage (None when the window
    reported none); ``latency`` the wall-time percentiles per namespace; ``statuses`` the
    requests per namespace and invocation status; ``hot_requests`` / ``hot_cpu`` the busiest
    objects (None: not asked for); ``dropped`` the rows refused at the edge (bad ids, bad
    text). ``next_after`` is the ``after`` of the next page, None when the answer is complete.
    """

    usage: Mapping[str, NamespaceUsage] = field(default_factory=frozen)
    websockets: Mapping[str, int] = field(default_factory=frozen)
    stored_bytes: Mapping[str, int] = field(default_factory=frozen)
    account_stored_bytes: int | None = None
    next_after: str | None = None
    latency: Mapping[str, Latency] = field(default_factory=frozen)
    statuses: Mapping[str, Mapping[str, int]] = field(default_factory=frozen)
    hot_requests: tuple[HotObject, ...] | None = None
    hot_cpu: tuple[HotObject, ...] | None = None
    dropped: int = 0

    def merge(self, page: AccountUsage) -> AccountUsage:
        """This answer plus the next page (a namespace already seen keeps its first rows;
        the busiest objects come from the first page)."""

        def union(a: Mapping[str, Any], b: Mapping[str, Any]) -> Mapping[str, Any]:
            return frozen({**b, **a})

        return AccountUsage(
            usage=union(self.usage, page.usage),
            websockets=union(self.websockets, page.websockets),
            stored_bytes=union(self.stored_bytes, page.stored_bytes),
            account_stored_bytes=(
                self.account_stored_bytes
                if self.account_stored_bytes is not None
                else page.account_stored_bytes
            ),
            next_after=page.next_after,
            latency=union(self.latency, page.latency),
            statuses=union(self.statuses, page.statuses),
            hot_requests=self.hot_requests if self.hot_requests is not None else page.hot_requests,
            hot_cpu=self.hot_cpu if self.hot_cpu is not None else page.hot_cpu,
            dropped=self.dropped + page.dropped,
        )


@dataclass(frozen=True, slots=True)
class AnalyticsError:
    """An answer that cannot be counted: never a zero.

    ``kind``: ``graphql`` (``errors[]`` in the body, whatever the status and whatever
    partial ``data`` came with it), ``http`` (an error status without GraphQL errors),
    ``invalid_response`` (not JSON, wrong shapes, absurd sizes), or the client's own kinds
    (``transport``, ...) when no answer came. ``codes`` are the errors' ``extensions.code``
    (``"unknown"`` when absent).
    """

    kind: str
    message: str
    codes: tuple[str, ...] = ()
    messages: tuple[str, ...] = ()
    status: int | None = None

    @property
    def permission_denied(self) -> bool:
        """The token cannot read this account's analytics (Account Analytics Read missing)."""
        if self.status == 403 or "authz" in self.codes:
            return True
        return any(
            "not authorized" in m.lower() or "does not have access" in m.lower()
            for m in self.messages
        )

    @property
    def transient(self) -> bool:
        """Worth asking again within the poll: a timeout or an internal error inside a 200,
        a 5xx, or no answer at all. Never a refused permission, a refused query or a spent
        budget (429: the limiter waits for it)."""
        if self.permission_denied or self.status == 429:
            return False
        if self.kind in ("transport", "timeout") or (self.status or 0) >= 500:
            return True
        if self.kind != "graphql":
            return False
        if any(c in TRANSIENT_CODES for c in self.codes):
            return True
        return any(w in m.lower() for m in self.messages for w in TRANSIENT_WORDS)

    @property
    def error_codes(self) -> tuple[str, ...]:
        """Labels for the exporter's error counter: the codes, else the kind."""
        return self.codes or (self.kind,)


TRANSIENT_CODES = frozenset({"timeout", "internal", "internal_error", "service_unavailable"})
TRANSIENT_WORDS = ("timeout", "timed out", "try again", "temporarily")
