"""The process-wide byte budget for answers in flight.

Every answer's bytes (raw as read, inflated, and what decoding them will build) are
acquired from one :class:`ByteBudget` before they exist: a reader blocks until enough of
the budget is free (never past its request's deadline), so under big answers fewer run at
once, and the bytes of all answers held at any moment never exceed the budget together.
One answer can never need more than the whole budget (the per-answer cap is below it).

A reader that holds bytes and waits for more can deadlock with others doing the same; when
every holder waits, the last one to wait gives up (:class:`BudgetExhausted`, a transport
error retried like any) and frees its bytes for the others.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import threading
import time

MIB = 1024 * 1024
DEFAULT_BUDGET_BYTES = 64 * MIB  # bodies in flight, all credentials and walks together


# Buffers from this size up get their own mapping, unmapped when freed (glibc).
MMAP_THRESHOLD = 256 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameters
_M_ARENA_MAX = -8
# malloc arenas the threads share (glibc's default: 8 per core, each keeping its peak).
# Threads run Python under one lock, so they seldom contend for malloc: two arenas cost no
# measurable CPU and about 3 MB less RSS at 5,000 namespaces (docs/benchmarks.md, Scale).
ARENA_MAX = 2
_allocator_set = False


def share_malloc_arenas() -> None:
    """Cap glibc's malloc arenas at :data:`ARENA_MAX` (elsewhere nothing). Takes effect for
    arenas not yet made: called when this module is imported, before any worker thread."""
    with contextlib.suppress(AttributeError, OSError, TypeError):
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, ARENA_MAX)


def return_big_buffers_to_the_os() -> None:
    """Make freed body buffers go back to the OS at once (glibc; elsewhere nothing).

    glibc raises its mmap threshold each time a big block is freed, after which bodies of
    up to 32 MiB come from per-thread arenas that keep their peak: with 64 walks the
    process grew to 4x the byte budget. A fixed threshold keeps RSS near what the budget
    holds, at the cost of page faults for every megabyte read (about 12% of the CPU of a
    walk), so :mod:`.body` sets it only once an unusually large answer shows up.
    """
    global _allocator_set
    if _allocator_set:
        return
    _allocator_set = True
    with contextlib.suppress(AttributeError, OSError, TypeError):
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


class BudgetExhausted(Exception):
    """Bytes could not be had: over the whole budget, past the deadline, or a deadlock."""


class OverBudget(BudgetExhausted):
    """One answer would need more than the whole budget (never retried)."""


class ByteBudget:
    """At most ``total`` bytes held by all leases together."""

    def __init__(self, total: int = DEFAULT_BUDGET_BYTES) -> None:
        if total <= 0:
            raise ValueError("a byte budget must be positive")
        self.total = total
        self._cond = threading.Condition()
        self._used = 0
        self._peak = 0
        self._holders: dict[int, bool] = {}  # lease id -> waiting
        self._ids = itertools.count()

    @property
    def used(self) -> int:
        """Bytes held now."""
        return self._used

    @property
    def peak(self) -> int:
        """Most bytes ever held at once."""
        return self._peak

    def lease(self) -> Lease:
        """A new lease holding nothing (one per answer)."""
        return Lease(self, next(self._ids))

    def _grow(self, lease: Lease, n: int, deadline: float) -> None:
        with self._cond:
            if lease.held + n > self.total:
                self._drop(lease)
                raise OverBudget(f"the answer would need more than {self.total} bytes")
            while self._used + n > self.total:
                if lease.held and self._all_holders_wait(lease):
                    self._drop(lease)
                    raise BudgetExhausted("every answer in flight waits for memory")
                left = deadline - time.monotonic()
                if left <= 0:
                    self._drop(lease)
                    raise BudgetExhausted("no memory for the answer within its deadline")
                if lease.held:
                    self._holders[lease.key] = True
                try:
                    self._cond.wait(left)
                finally:
                    if lease.held:
                        self._holders[lease.key] = False
            self._used += n
            lease.held += n
            self._holders[lease.key] = False
            self._peak = max(self._peak, self._used)

    def _all_holders_wait(self, lease: Lease) -> bool:
        return all(waiting for key, waiting in self._holders.items() if key != lease.key)

    def _shrink(self, lease: Lease, n: int) -> None:
        n = min(n, lease.held)
        if n <= 0:
            return
        with self._cond:
            self._used -= n
            lease.held -= n
            if not lease.held:
                self._holders.pop(lease.key, None)
            self._cond.notify_all()

    def _drop(self, lease: Lease) -> None:
        """Free all of ``lease`` (the condition's lock held)."""
        self._used -= lease.held
        lease.held = 0
        self._holders.pop(lease.key, None)
        self._cond.notify_all()


class Lease:
    """The bytes one answer holds of a :class:`ByteBudget`."""

    __slots__ = ("_budget", "held", "key")

    def __init__(self, budget: ByteBudget, key: int) -> None:
        self._budget = budget
        self.key = key
        self.held = 0

    def grow(self, n: int, deadline: float) -> None:
        """Hold ``n`` more bytes, waiting for them until ``deadline`` (monotonic); on
        :class:`BudgetExhausted` the lease holds nothing."""
        if n > 0:
            self._budget._grow(self, n, deadline)

    def shrink(self, n: int) -> None:
        """Give back ``n`` bytes (at most what is held)."""
        self._budget._shrink(self, n)

    def release(self) -> None:
        """Give back everything."""
        self._budget._shrink(self, self.held)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


share_malloc_arenas()
