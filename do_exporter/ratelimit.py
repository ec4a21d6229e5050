"""A request budget shared by every account and every worker thread.

Cloudflare counts requests per user in a window of 5 minutes (1,200 by default) and blocks
the user for the rest of the window once it is exceeded. :class:`RateLimiter` therefore
enforces exactly that shape: at most ``requests`` in any ``window`` seconds, as a sliding
window over the times of the last grants. A classic token bucket of the same average rate
either bursts past the budget (bucket size plus refill can reach twice the limit in one
window) or, with a small bucket, paces requests that would have fitted, so it was not used.

A 429 from the API pauses every caller until ``Retry-After`` has passed (:meth:`pause`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class Cancelled(Exception):
    """The wait was interrupted because the exporter is shutting down."""


class RateLimiter:
    """At most ``requests`` grants in any ``window`` seconds, plus pauses on demand."""

    def __init__(
        self,
        requests: int,
        window: float = 300.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        cancel: threading.Event | None = None,
    ) -> None:
        if requests < 1 or window <= 0:
            raise ValueError("requests must be >= 1 and window > 0")
        self.requests = requests
        self.window = window
        self._clock = clock
        self._cancel = cancel or threading.Event()
        self._grants: deque[float] = deque()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    @property
    def rate(self) -> float:
        """The long-run budget in requests per second."""
        return self.requests / self.window

    def acquire(self) -> float:
        """Block until one request may be sent; return the seconds spent waiting.

        Raises :class:`Cancelled` if the cancel event is set while waiting.
        """
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                horizon = now - self.window
                while self._grants and self._grants[0] <= horizon:
                    self._grants.popleft()
                if self._paused_until > now:
                    delay = self._paused_until - now
                elif len(self._grants) < self.requests:
                    self._grants.append(now)
                    return waited
                else:
                    delay = self._grants[0] + self.window - now
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
        """Requests granted within the current window."""
        with self._lock:
            horizon = self._clock() - self.window
            while self._grants and self._grants[0] <= horizon:
                self._grants.popleft()
            return len(self._grants)
