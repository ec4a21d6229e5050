"""A request budget shared by every account and every worker thread of one credential.

Cloudflare counts requests per user in a window of 5 minutes (1,200 by default) and blocks
the user for the rest of the window once it is exceeded. :class:`RateLimiter` therefore
enforces exactly that shape: at most ``requests`` in any ``window`` seconds, as a sliding
window over the times of the last grants. A classic token bucket of the same average rate
either bursts past the budget (bucket size plus refill can reach twice the limit in one
window) or, with a small bucket, paces requests that would have fitted, so it was not used.

A second, short window (``per_second``) keeps bursts under Cloudflare's per-IP limit of 200
requests a second. A 429 from the API pauses every caller until ``Retry-After`` has passed
(:meth:`RateLimiter.pause`).

Callers queue in :class:`Lane` order, then first come first served: discovery and
namespace lists (``CONTROL``) never wait behind object walks, and the pages of walks beyond
their fair share (``BULK``) wait behind everything else and are held to a window of their
own (:meth:`RateLimiter.set_bulk_limit`). Only the caller at the head of the queue watches
the clock; the others sleep until it hands over, so a free slot wakes one thread.

The user's budget is shared with every other tool of the user. When the API says (in its
``Ratelimit`` header) that no more than ``reserve`` requests are left in its window, the
limiter holds every caller until the window resets (:meth:`RateLimiter.observe`), and counts
the seconds it held them for that reason.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from enum import IntEnum


class Cancelled(Exception):
    """The wait was interrupted because the exporter is shutting down."""


class Lane(IntEnum):
    """Who goes first when callers wait (lower first)."""

    CONTROL = 0  # GET /accounts and namespace lists: what every count depends on
    FRESH = 1  # counts that are due every interval
    BULK = 2  # pages of long walks beyond an interval's share of the budget


# Longest single sleep of the caller at the head of the queue: it re-reads the windows at
# least this often, so a raised bulk limit or a new pause takes effect within it.
HEAD_SLEEP = 5.0
# Seconds held when the API reports the reserve reached but gives no reset time.
DEFAULT_RESERVE_HOLD = 60.0
# Shortest hold: "t=0" means the window resets within the second.
MIN_RESERVE_HOLD = 1.0
# Longest hold for the reserve: Cloudflare's window; a wild reset time must not stop us.
MAX_RESERVE_HOLD = 300.0


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
        return grants[len(grants) - self.limit] + self.seconds - now


def reserve_hold(remaining: int | None, reset: float | None, reserve: int) -> float:
    """Seconds to hold every request after the API reported ``remaining`` left (pure).

    Nothing is held when the API sends no count; at ``remaining <= reserve`` everything is
    held until the user's window resets (``reset`` seconds, at least one and at most
    Cloudflare's 5-minute window; a minute when the API does not say).
    """
    if remaining is None or remaining > reserve:
        return 0.0
    if reset is None:
        return DEFAULT_RESERVE_HOLD
    return min(max(reset, MIN_RESERVE_HOLD), MAX_RESERVE_HOLD)


class _Waiter:
    __slots__ = ("lane", "turn")

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.turn = threading.Event()  # set when this waiter reaches the head


class RateLimiter:
    """At most ``requests`` grants in any ``window`` seconds (and ``per_second`` in any
    second), plus pauses on demand; callers served by :class:`Lane`."""

    def __init__(
        self,
        requests: int,
        window: float = 300.0,
        *,
        per_second: int | None = None,
        reserve: int = 0,
        clock: Callable[[], float] = time.monotonic,
        cancel: threading.Event | None = None,
    ) -> None:
        self.requests = requests
        self.window = window
        self.reserve = reserve
        self._windows = [_Window(requests, window)]
        if per_second is not None:
            self._windows.append(_Window(per_second, 1.0))
        self._bulk = _Window(requests, window)
        self._clock = clock
        self._cancel = cancel or threading.Event()
        self._paused_until = 0.0
        self._reserve_until = 0.0
        self._reserve_held = 0.0
        self._lock = threading.Lock()
        self._queue: list[tuple[int, int, _Waiter]] = []
        self._seq = itertools.count()
        self._watcher: threading.Thread | None = None

    # -- granting -------------------------------------------------------------------------

    def acquire(self, lane: Lane = Lane.FRESH) -> float:
        """Block until one request of ``lane`` may be sent; return the seconds waited.

        Raises :class:`Cancelled` if the cancel event is set while waiting.
        """
        waiter = _Waiter(lane)
        entry = (int(lane), next(self._seq), waiter)
        started = self._clock()
        with self._lock:
            if self._watcher is None and self._queue:
                self._start_watcher()  # before queueing: a failed start leaves no entry behind
            heapq.heappush(self._queue, entry)
            if self._queue[0] is entry:
                waiter.turn.set()
        try:
            while True:
                if self._cancel.is_set():
                    raise Cancelled()
                if not waiter.turn.is_set():
                    waiter.turn.wait()
                    continue
                with self._lock:
                    if self._queue[0] is not entry:  # overtaken by an earlier lane
                        waiter.turn.clear()
                        continue
                    now = self._clock()
                    delay = self._delay(now, lane)
                    if delay <= 0:
                        self._grant(now, lane)
                        return max(0.0, now - started)
                if self._cancel.wait(min(max(delay, 0.001), HEAD_SLEEP)):
                    raise Cancelled()
        finally:
            with self._lock:
                self._leave(entry)

    def try_acquire(self, lane: Lane = Lane.FRESH) -> bool:
        """Take one grant if one is free now and nobody of an earlier lane waits."""
        with self._lock:
            if self._queue and self._queue[0][0] <= lane:
                return False
            now = self._clock()
            if self._delay(now, lane) > 0:
                return False
            self._grant(now, lane)
            return True

    def _grant(self, now: float, lane: Lane) -> None:
        for w in self._windows:
            w.grants.append(now)
        if lane is Lane.BULK:
            self._bulk.grants.append(now)

    def _delay(self, now: float, lane: Lane) -> float:
        delays = [self._paused_until - now, *(w.delay(now) for w in self._windows)]
        if lane is Lane.BULK:
            delays.append(self._bulk.delay(now))
        return max(delays)

    def _leave(self, entry: tuple[int, int, _Waiter]) -> None:
        """Take ``entry`` out of the queue and hand the head's turn on (under the lock)."""
        if self._queue and self._queue[0] is entry:
            heapq.heappop(self._queue)
        else:
            self._queue.remove(entry)
            heapq.heapify(self._queue)
        if self._queue:
            self._queue[0][2].turn.set()

    def _start_watcher(self) -> None:
        """One thread per limiter wakes every sleeping caller on shutdown (under the lock)."""

        def watch() -> None:
            if self._cancel.wait():
                with self._lock:
                    for _, _, waiter in self._queue:
                        waiter.turn.set()

        watcher = threading.Thread(target=watch, name="ratelimit-cancel", daemon=True)
        watcher.start()
        self._watcher = watcher  # only once running: a failed start is tried again

    # -- shaping --------------------------------------------------------------------------

    def set_bulk_limit(self, limit: int) -> None:
        """Most ``BULK`` grants in any window (at least 1, at most the whole budget)."""
        with self._lock:
            self._bulk.limit = max(1, min(self.requests, limit))

    @property
    def bulk_limit(self) -> int:
        return self._bulk.limit

    def pause(self, seconds: float) -> None:
        """Hold every caller for ``seconds`` from now (a 429 answer or an exhausted budget)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def observe(self, remaining: int | None, reset: float | None) -> float:
        """Apply the API's report of the user's budget; return the seconds of a new hold.

        At ``remaining <= reserve`` every caller is held until the reset (see
        :func:`reserve_hold`); the seconds added to the hold are counted in
        :meth:`reserve_held_seconds`. Returns 0 when nothing is held or a hold was already
        running (answers of requests in flight report the same low budget).
        """
        hold = reserve_hold(remaining, reset, self.reserve)
        if hold <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            until = now + hold
            new = self._reserve_until <= now
            if until > self._reserve_until:
                self._reserve_held += until - max(self._reserve_until, now)
                self._reserve_until = until
            self._paused_until = max(self._paused_until, until)
        return hold if new else 0.0

    # -- reading --------------------------------------------------------------------------

    def paused_for(self) -> float:
        """Seconds left in the current pause (0 when not paused)."""
        with self._lock:
            return max(0.0, self._paused_until - self._clock())

    def reserve_held_seconds(self) -> float:
        """Seconds every request was held so far to leave the reserve to other tools."""
        with self._lock:
            return self._reserve_held

    def used(self) -> int:
        """Requests granted within the current (long) window."""
        with self._lock:
            self._windows[0].delay(self._clock())
            return len(self._windows[0].grants)

    def waiting(self) -> int:
        """Callers queued now."""
        with self._lock:
            return len(self._queue)
