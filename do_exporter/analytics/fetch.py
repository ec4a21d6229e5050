"""One account's analytics, asked for: the usage query's pages, the ``settings`` query, and
the retries of a transient failure.

Nothing here knows HTTP: ``send`` posts one GraphQL body and gives back the decoded answer
(a mapping), or an :class:`AnalyticsError` when none came (the caller turns its client's
exceptions into one). ``now``/``wait`` are the poll's clock and cancellable sleep, so the
retries are tested on a hand-moved clock.

Retries: an answer that is :attr:`AnalyticsError.transient` (a timeout or internal error in
a 200, a 5xx, no answer) is asked again after ``BACKOFF`` seconds, doubled each time, at
most ``ATTEMPTS`` times in all, and only while the wait ends before ``deadline``; every
attempt goes through the client's GraphQL limiter, so the GraphQL budget holds. A refused
permission, a refused query or a spent budget is never retried.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..metrics.groups import GROUPS
from .answers import AccountUsage, AnalyticsError
from .parse import parse_analytics, parse_settings
from .query import (
    DEFAULT_TOP_OBJECTS,
    MAX_PAGES,
    PAGE_SIZE,
    PAGED,
    STORAGE,
    aliases,
    build_request,
    settings_request,
    status_limit,
)
from .windows import DEFAULT_LIMITS, LIMITS_MAX_AGE, NodeLimits, Window

Answer = Mapping[str, Any] | AccountUsage | AnalyticsError
Send = Callable[[Mapping[str, Any]], Answer]
ATTEMPTS = 3
BACKOFF = 1.0  # seconds before the first retry; doubled after each
BASE = (*PAGED, STORAGE)  # the aliases every page holds


def _never(_: float) -> bool:
    return False


@dataclass(frozen=True)
class Retry:
    """How a transient failure is asked again: ``now`` reads the clock the ``deadline`` is
    on, ``wait(seconds)`` sleeps and returns True when the poll was cancelled."""

    now: Callable[[], float] | None = None
    wait: Callable[[float], bool] = _never
    deadline: float | None = None
    attempts: int = ATTEMPTS
    backoff: float = BACKOFF

    def allows(self, delay: float) -> bool:
        """Whether another attempt may start after ``delay`` seconds: only before the poll's
        deadline. A poll without one (``--once``) asks once: each attempt may take the
        client's whole request budget (120 s at the defaults), and ``--once`` must end."""
        if self.deadline is None or self.now is None:
            return False
        return self.now() + delay < self.deadline


NO_RETRY = Retry(attempts=1)


def _retried(ask: Callable[[], Any], retry: Retry) -> Any:
    delay = retry.backoff
    for attempt in range(max(1, retry.attempts)):
        answer = ask()
        last = attempt == max(1, retry.attempts) - 1
        if not isinstance(answer, AnalyticsError) or not answer.transient or last:
            return answer
        if not retry.allows(delay) or retry.wait(delay):
            return answer
        delay *= 2
    return answer  # pragma: no cover (the loop always returns)


def fetch_usage(
    send: Send,
    account_id: str,
    window: Window,
    *,
    limits: NodeLimits = DEFAULT_LIMITS,
    top_objects: int = DEFAULT_TOP_OBJECTS,
    groups: Collection[str] = GROUPS,
    retry: Retry = NO_RETRY,
    max_pages: int = MAX_PAGES,
) -> AccountUsage | AnalyticsError:
    """Every page of ``window`` for one account, merged; or the first page that failed.

    Pages hold at most ``min(PAGE_SIZE, limits.max_page_size)`` rows per dataset.
    """
    page_size = max(1, min(PAGE_SIZE, limits.max_page_size))
    usage: AccountUsage | None = None
    after = ""
    for _ in range(max_pages):
        body = build_request(
            account_id, window, after=after, page_size=page_size,
            top_objects=top_objects, groups=groups, max_page_size=limits.max_page_size,
            max_duration=limits.max_duration,
        )  # fmt: skip
        asked = aliases(top_objects=top_objects, groups=groups, first=after == "")
        require = [a for a in asked if a not in BASE]  # status, top-N: when asked for

        statuses = status_limit(page_size, limits.max_page_size)

        def ask(
            body: Mapping[str, Any] = body, require: list[str] = require, statuses: int = statuses
        ) -> Any:
            answer = send(body)
            if isinstance(answer, AccountUsage | AnalyticsError):
                return answer
            return parse_analytics(
                answer, page_size=page_size, require=require, status_page_size=statuses
            )

        page = _retried(ask, retry)
        if isinstance(page, AnalyticsError):
            return page
        usage = page if usage is None else usage.merge(page)
        if usage.next_after is None:
            return usage
        after = usage.next_after
    return AnalyticsError("invalid_response", f"more than {max_pages} pages of namespaces")


def as_usage(
    answer: Answer, *, page_size: int = PAGE_SIZE, require: Collection[str] = ()
) -> AccountUsage | AnalyticsError:
    """A page as :func:`parse_analytics` reads it (an answer parsed already passes)."""
    if isinstance(answer, AccountUsage | AnalyticsError):
        return answer
    return parse_analytics(answer, page_size=page_size, require=require)


def fetch_limits(
    send: Send, account_id: str, *, retry: Retry = NO_RETRY
) -> NodeLimits | AnalyticsError:
    """The plan's limits for the account's datasets, from ``settings``."""

    def ask() -> NodeLimits | AnalyticsError:
        answer = send(settings_request(account_id))
        if isinstance(answer, AnalyticsError):
            return answer
        if isinstance(answer, AccountUsage):
            return AnalyticsError("invalid_response", "a usage answer to the settings query")
        return parse_settings(answer)

    result: NodeLimits | AnalyticsError = _retried(ask, retry)
    return result


@dataclass
class LimitsBook:
    """Each account's limits and when they were read (thread-safe): read at start-up and
    again after ``max_age`` seconds; the defaults stand in until then, and stay when
    ``settings`` cannot be read (asked again at the next poll)."""

    max_age: float = LIMITS_MAX_AGE
    _read: dict[str, tuple[NodeLimits, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def limits(self, account_id: str) -> NodeLimits:
        with self._lock:
            got = self._read.get(account_id)
        return got[0] if got is not None else DEFAULT_LIMITS

    def due(self, account_id: str, now: float) -> bool:
        with self._lock:
            got = self._read.get(account_id)
        return got is None or now - got[1] >= self.max_age

    def refresh(self, send: Send, account_id: str, now: float) -> NodeLimits | AnalyticsError:
        """Read the account's limits when due; the limits in force (or the failure)."""
        if not self.due(account_id, now):
            return self.limits(account_id)
        got = fetch_limits(send, account_id)
        if isinstance(got, AnalyticsError):
            return got
        if got.max_page_size <= 0 or got.max_duration <= 0 or got.not_older_than <= 0:
            got = DEFAULT_LIMITS  # absurd limits: the defaults stand in
        with self._lock:
            self._read[account_id] = (got, now)
        return got
