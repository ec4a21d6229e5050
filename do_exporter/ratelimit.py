"""A request budget shared by every account and every worker thread.

Cloudflare counts requests per user in a window of 5 minutes (1,200 by default) and blocks
the user for the rest of the window once it is exceeded. :class:`RateLimiter` therefore
enforces exactly that shape: at most ``requests`` in any ``window`` seconds, as a sliding
window over the times of the last grants. A classic token bucket of the same average rate
either bursts past the budget (bucket size plus refill can reach twice the limit in one
window) or, with a small bucket, paces requests that would have fitted, so it was not used.

A second, short window (``per_second``) keeps bursts under Cloudflare's per-IP limit of 200
requests a second. A 429 from the API pauses every caller until ``Retry-After`` has passed
(:meth:`pause`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class Cancelled(Exception):
    """The wait was interrupted because the exporter is shutting down."""


class _Window:
    """Times of the grants inside one sliding window."""

    __slots__ = ("grants", "limit", "seconds")

    def __init__(self, limit: int, seconds: float) -> None:
        if limit < 1 or seconds <= 0:
            raise ValueError("a window needs limit >= 1 and seconds > 0")
        self.limit = limit
        self.seconds = seconds
        self.grants: deque[float] = deque()

    def delay(self, now: float) -> float:
        """Seconds until this window has room (0: room now), after forgetting old grants."""
        horizon = now - self.seconds
        grants = self.grants
        while grants and grants[0] <= horizon:
            grants.popleft()
        if len(grants) < self.limit:
            return 0.0
        return grants[0] + self.seconds - now


class RateLimiter:
    """At most ``requests`` grants in any ``window`` seconds (and ``per_second`` in any
    second), plus pauses on demand."""

    def __init__(
        self,
        requests: int,
        window: float = 300.0,
        *,
        per_second: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        cancel: threading.Event | None = None,
    ) -> None:
        self.requests = requests
        self.window = window
        self._windows = [_Window(requests, window)]
        if per_second is not None:
            self._windows.append(_Window(per_second, 1.0))
        self._clock = clock
        self._cancel = cancel or threading.Event()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until one request may be sent; return the seconds spent waiting.

        Raises :class:`Cancelled` if the cancel event is set while waiting.
        """
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                delay = max(self._paused_until - now, *(w.delay(now) for w in self._windows))
                if delay <= 0:
                    for w in self._windows:
                        w.grants.append(now)
                    return waited
            if self._cancel.wait(max(delay, 0.001)):
                raise Cancelled()
            waited += delay

    def pause(self, seconds: float) -> None:
        """Hold every caller for ``seconds`` from now (a 429 answer or an exhausted budget)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def paused_for(self) -> float:
        """Seconds left in the current pause (0 when not paused)."""
        with self._lock:
            return max(0.0, self._paused_until - self._clock())

    def used(self) -> int:
        """Requests granted within the current (long) window."""
        with self._lock:
            self._windows[0].delay(self._clock())
            return len(self._windows[0].grants)
