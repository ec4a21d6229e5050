"""The request budget of one Cloudflare user, shared by its tokens and its other clients.

Cloudflare allows 1,200 requests per five minutes per user, counted across the dashboard, API
keys and API tokens together, and blocks every call of that user with HTTP 429 once it is
spent. :class:`UserBudget` models that as a fixed window: it opens at the first request
after the previous one ended, holds ``requests`` answers, and refuses everything else until
it ends. The user's *other clients* spend the same budget at a steady rate on the
simulator's clock; their requests are worked out when somebody looks (lazily, in bulk per
window), so no thread runs and a test that moves its clock by hours costs nothing.

:class:`Budgets` holds every user's budget, finds the one a token spends, and answers 429 in
Cloudflare's words with the scenario's style of rate-limit headers.

Every method takes ``now`` (the simulator's clock): decisions here never read time.
"""

from __future__ import annotations

import email.utils
import math
import threading
from dataclasses import dataclass
from typing import Any

from do_exporter.simulator import responses as r
from do_exporter.simulator.responses import Response
from do_exporter.simulator.scenario import RateLimitSpec, Scenario


@dataclass
class Charge:
    """The outcome of one request: allowed or not, what is left, seconds to the reset."""

    allowed: bool
    remaining: int
    reset: int


class UserBudget:
    """A fixed window of ``requests`` per ``window_seconds``, spent by HTTP requests and by
    ``other_per_minute`` requests per minute from the user's other clients, the first one
    ``60 / other_per_minute`` seconds after ``start``."""

    def __init__(
        self,
        name: str,
        requests: int,
        window_seconds: float,
        *,
        start: float,
        other_per_minute: float = 0.0,
    ) -> None:
        self.name = name
        self.requests = requests
        self.window_seconds = window_seconds
        self._start = start
        self._interval = 60.0 / other_per_minute if other_per_minute > 0 else None
        self._window_start: float | None = None
        self._used = 0
        self._others_sent = 0  # other clients' requests worked out so far
        self.http_requests = 0
        self.http_rate_limited = 0
        self.other_requests = 0
        self.other_rate_limited = 0

    def charge(self, now: float) -> Charge:
        """Charge one HTTP request made at ``now``; refused once the window is spent."""
        self._advance(now)
        self._roll(now)
        reset = self._reset(now)
        if self._used >= self.requests:
            self.http_rate_limited += 1
            return Charge(False, 0, reset)
        self._used += 1
        self.http_requests += 1
        return Charge(True, self.requests - self._used, reset)

    def snapshot(self, now: float) -> dict[str, Any]:
        """The budget's state at ``now`` and its counters since the last reset."""
        self._advance(now)
        open_window = self._window_start is not None and now < self._window_end()
        used = self._used if open_window else 0
        return {
            "requests": self.requests,
            "window_seconds": self.window_seconds,
            "used": used,
            "remaining": self.requests - used,
            "resets_in": self._reset(now) if open_window else None,
            "http_requests": self.http_requests,
            "http_rate_limited": self.http_rate_limited,
            "other_clients_requests": self.other_requests,
            "other_clients_rate_limited": self.other_rate_limited,
        }

    def reset_counters(self) -> None:
        """Zero the counters; the window and what it has used stay."""
        self.http_requests = self.http_rate_limited = 0
        self.other_requests = self.other_rate_limited = 0

    # ---- internals ------------------------------------------------------------------------
    def _window_end(self) -> float:
        assert self._window_start is not None
        return self._window_start + self.window_seconds

    def _roll(self, t: float) -> None:
        """Open a new window at ``t`` if none is open."""
        if self._window_start is None or t >= self._window_end():
            self._window_start = t
            self._used = 0

    def _reset(self, now: float) -> int:
        return max(1, math.ceil(self._window_end() - now))

    def _advance(self, now: float) -> None:
        """Work out the other clients' requests up to ``now``, one window at a time."""
        interval = self._interval
        if interval is None:
            return
        while True:
            first = self._others_sent + 1
            t = self._start + first * interval
            if t > now:
                return
            self._roll(t)
            end = self._window_end()
            by_now = math.floor((now - self._start) / interval)
            before_end = math.ceil((end - self._start) / interval) - 1
            last = max(first, min(by_now, before_end))
            sent = last - self._others_sent
            taken = min(sent, max(0, self.requests - self._used))
            self._used += taken
            self.other_requests += taken
            self.other_rate_limited += sent - taken
            self._others_sent = last


class Budgets:
    """Every user's :class:`UserBudget`, and which one each token spends.

    A token of no listed user is its own user (``token:<id>``) with the scenario's limit.
    """

    def __init__(self, scenario: Scenario, now: float) -> None:
        self._lock = threading.Lock()
        self._style = scenario.rate_limit.headers
        self._budgets: dict[str, UserBudget] = {}  # by user name
        self._budget_of: dict[str, UserBudget] = {}  # by token value
        self.rate_limited = 0  # 429s answered since the last reset
        for user in scenario.users:
            per_minute = user.other_clients_per_minute
            budget = self._new(user.name, user.rate_limit, now, per_minute)
            for value in user.tokens:
                self._budget_of[value] = budget
        for spec in scenario.tokens:
            if spec.value not in self._budget_of:
                name = f"token:{spec.id}"
                self._budget_of[spec.value] = self._new(name, scenario.rate_limit, now, 0)

    def _new(
        self, name: str, limit: RateLimitSpec, now: float, other_per_minute: float
    ) -> UserBudget:
        budget = UserBudget(
            name,
            limit.requests,
            limit.window_seconds,
            start=now,
            other_per_minute=other_per_minute,
        )
        self._budgets[name] = budget
        return budget

    def spend(
        self, token: str, now: float, unix_now: float
    ) -> tuple[Response | None, list[tuple[str, str]]]:
        """Charge one request to the token's user: ``(None, headers)`` when allowed, else
        ``(429 answer, [])``. ``unix_now`` dates ``X-RateLimit-Reset``."""
        with self._lock:
            budget = self._budget_of[token]
            charge = budget.charge(now)
            headers = self._headers(budget, charge, unix_now)
            if charge.allowed:
                return None, headers
            self.rate_limited += 1
        window = r.seconds_text(budget.window_seconds)
        message = f"More than {budget.requests} requests per {window} seconds reached. "
        answer = r.error(429, (r.RATE_LIMITED[0], message + r.RATE_LIMITED[1]))
        answer.headers.append(("Retry-After", str(charge.reset)))
        answer.headers.extend(headers)
        return answer, []

    def _headers(
        self, budget: UserBudget, charge: Charge, unix_now: float
    ) -> list[tuple[str, str]]:
        """The budget headers in the scenario's style (``rate_limit.headers``)."""
        headers: list[tuple[str, str]] = []
        if self._style in ("ratelimit", "both"):
            window = r.seconds_text(budget.window_seconds)
            headers.append(("Ratelimit", f'"default";r={charge.remaining};t={charge.reset}'))
            headers.append(("Ratelimit-Policy", f'"default";q={budget.requests};w={window}'))
        if self._style in ("x-ratelimit", "both"):
            headers.append(("X-RateLimit-Limit", str(budget.requests)))
            headers.append(("X-RateLimit-Remaining", str(charge.remaining)))
            if not charge.allowed:
                reset_at = unix_now + charge.reset
                headers.append(("X-RateLimit-Reset", email.utils.formatdate(reset_at, usegmt=True)))
        return headers

    def snapshot(self, now: float) -> dict[str, dict[str, Any]]:
        """Each user's budget at ``now``, by user name."""
        with self._lock:
            return {name: b.snapshot(now) for name, b in self._budgets.items()}

    def reset_counters(self) -> None:
        """Zero the counters; the windows and what they have used stay."""
        with self._lock:
            self.rate_limited = 0
            for budget in self._budgets.values():
                budget.reset_counters()
