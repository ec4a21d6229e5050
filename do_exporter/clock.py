"""Time as a seam: everything that decides by the clock takes a :class:`Clock`.

Two readings, because they answer different questions: ``monotonic()`` for deadlines,
timeouts, backoff and rate windows (it never jumps), ``time()`` for what is published as
Unix time (poll timestamps, analytics windows). ``SYSTEM`` reads the real clocks; tests hand
in ``tests.support.FakeClock`` and move time by hand. A socket cannot follow a fake clock, so
the few places that wait on the network (the transport's watchdog, the server's selector)
take their *timeouts* from a clock but still block on real time.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """The two readings a component may need (see the module doc)."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...


class SystemClock:
    """The machine's clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM: Clock = SystemClock()
