"""What the exporter knows of one account's usage: an immutable :class:`AnalyticsState`,
folded from complete answers by :func:`advance` (or :func:`record_failure`, :func:`skip`,
:func:`forget`). Pure: no I/O, no clock."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .answers import AccountUsage, AnalyticsError, HotObject, Latency, NamespaceUsage, frozen
from .windows import Window

# Query results, pre-created so each reads 0 from the start. "denied": the token lacks
# Account Analytics Read (the poller decides; it is not a failure of the account).
RESULTS = ("success", "failure", "denied")


def _results() -> Mapping[str, int]:
    return frozen(dict.fromkeys(RESULTS, 0))


@dataclass(frozen=True, slots=True)
class HotObjects:
    """The busiest objects of the last counted window: ``requests`` (values: requests) and
    ``cpu`` (values: CPU µs), over ``seconds`` of window. Replaced whole by each window."""

    seconds: int = 0
    requests: tuple[HotObject, ...] = ()
    cpu: tuple[HotObject, ...] = ()


@dataclass(frozen=True, slots=True)
class AnalyticsState:
    """What the exporter knows of one account's usage; replaced whole, never mutated.

    ``watermark``: end of the last counted window (None before the first). ``first_start``:
    start of the first counted window; counters (``counters``, ``statuses``) hold exactly the
    sums over ``[first_start, watermark)`` less the ``skipped_seconds`` given up. Gauges
    (``websockets``, ``stored_bytes``) are the last value a window reported for the
    namespace; ``latency`` and ``hot`` are the last counted window's, whole (a namespace
    without requests in it has no percentiles; an object out of the top N has no series).
    ``dropped_rows`` counts the rows refused at the edge (bad ids or text).
    """

    account_id: str
    watermark: int | None = None
    first_start: int | None = None
    counters: Mapping[str, NamespaceUsage] = field(default_factory=frozen)
    websockets: Mapping[str, int] = field(default_factory=frozen)
    stored_bytes: Mapping[str, int] = field(default_factory=frozen)
    account_stored_bytes: int | None = None
    skipped_seconds: int = 0
    queries: Mapping[str, int] = field(default_factory=_results)
    last_success_at: float | None = None
    last_error: AnalyticsError | None = None
    statuses: Mapping[str, Mapping[str, int]] = field(default_factory=frozen)
    latency: Mapping[str, Latency] = field(default_factory=frozen)
    hot: HotObjects = HotObjects()
    dropped_rows: int = 0


def _bump(queries: Mapping[str, int], result: str) -> Mapping[str, int]:
    return frozen({**queries, result: queries.get(result, 0) + 1})


def _add_statuses(
    before: Mapping[str, Mapping[str, int]], new: Mapping[str, Mapping[str, int]]
) -> Mapping[str, Mapping[str, int]]:
    out = dict(before)
    for ns_id, per in new.items():
        old = out.get(ns_id, {})
        out[ns_id] = frozen({s: old.get(s, 0) + per.get(s, 0) for s in {*old, *per}})
    return frozen(out)


def advance(
    state: AnalyticsState, window: Window, usage: AccountUsage, *, now: float
) -> AnalyticsState:
    """Count one complete answer for ``window`` (pure).

    The window must start at the watermark (or, on the first poll, anywhere): a window that
    would overlap or leave a silent gap is a bug in the caller and raises ``ValueError``.
    """
    if usage.next_after is not None:
        raise ValueError("an incomplete answer (more pages follow) cannot be counted")
    if state.watermark is not None and window.start - window.skipped != state.watermark:
        raise ValueError(
            f"window [{window.start}, {window.end}) skipping {window.skipped}s does not "
            f"continue the watermark {state.watermark}"
        )
    counters = dict(state.counters)
    for ns_id, sums in usage.usage.items():
        before = counters.get(ns_id)
        counters[ns_id] = sums if before is None else before + sums
    return replace(
        state,
        watermark=window.end,
        first_start=window.start if state.first_start is None else state.first_start,
        counters=frozen(counters),
        websockets=frozen({**state.websockets, **usage.websockets}),
        stored_bytes=frozen({**state.stored_bytes, **usage.stored_bytes}),
        account_stored_bytes=(
            usage.account_stored_bytes
            if usage.account_stored_bytes is not None
            else state.account_stored_bytes
        ),
        skipped_seconds=state.skipped_seconds + window.skipped,
        queries=_bump(state.queries, "success"),
        last_success_at=now,
        last_error=None,
        statuses=_add_statuses(state.statuses, usage.statuses),
        latency=frozen(usage.latency),
        hot=HotObjects(window.seconds, usage.hot_requests or (), usage.hot_cpu or ()),
        dropped_rows=state.dropped_rows + usage.dropped,
    )


def skip(state: AnalyticsState, window: Window) -> AnalyticsState:
    """Give up ``window`` whole (nothing of it can be asked any more): it is counted as
    skipped and the watermark passes it."""
    if state.watermark is None:
        return state
    return replace(
        state,
        watermark=window.end,
        skipped_seconds=state.skipped_seconds + window.skipped + window.seconds,
    )


def record_failure(
    state: AnalyticsState, error: AnalyticsError | None = None, *, denied: bool = False
) -> AnalyticsState:
    """A query that gave no countable answer: counters, gauges and watermark stay."""
    return replace(
        state,
        queries=_bump(state.queries, "denied" if denied else "failure"),
        last_error=error,
    )


def known_namespaces(state: AnalyticsState) -> set[str]:
    """Every namespace the state holds a series for."""
    hot = {h.namespace_id for h in (*state.hot.requests, *state.hot.cpu)}
    return {*state.counters, *state.websockets, *state.stored_bytes, *state.statuses,
            *state.latency, *hot}  # fmt: skip


def forget(state: AnalyticsState, namespace_ids: Iterable[str]) -> AnalyticsState:
    """Drop the series of namespaces gone from the inventory."""
    gone = set(namespace_ids)
    if not gone:
        return state

    def keep(m: Mapping[str, Any]) -> Mapping[str, Any]:
        return frozen({k: v for k, v in m.items() if k not in gone})

    def keep_hot(objs: tuple[HotObject, ...]) -> tuple[HotObject, ...]:
        return tuple(h for h in objs if h.namespace_id not in gone)

    return replace(
        state,
        counters=keep(state.counters),
        websockets=keep(state.websockets),
        stored_bytes=keep(state.stored_bytes),
        statuses=keep(state.statuses),
        latency=keep(state.latency),
        hot=replace(state.hot, requests=keep_hot(state.hot.requests), cpu=keep_hot(state.hot.cpu)),
    )
