"""Analytics windows: which whole minutes a poll asks for, within the plan's limits.

The window rule, in one place (:func:`next_window`): a poll asks for the whole closed
minutes ``[watermark, floor_minute(now - delay))``; the first window is the last
``interval`` of closed minutes; the watermark moves only when a complete answer was applied,
so a failed poll is caught up by the next one. Minutes older than the plan allows
(``notOlderThan``), or beyond the widest range one query may ask (``maxDuration``), are given
up and counted as skipped seconds. The limits are read from Cloudflare's ``settings`` per
account (:mod:`.fetch`); :data:`DEFAULT_LIMITS` stand in until they are known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MINUTE = 60
LIMITS_MAX_AGE = 3600.0  # the plan's limits are read again after an hour


@dataclass(frozen=True, slots=True)
class NodeLimits:
    """A plan's limits for the analytics datasets (seconds, rows).

    The defaults are assumptions until ``settings`` is read (:func:`.parse.parse_settings`):
    one day per query and seven days back, well inside what Cloudflare documents.
    """

    max_duration: int = 86_400
    not_older_than: int = 7 * 86_400
    max_page_size: int = 10_000
    enabled: bool = True


DEFAULT_LIMITS = NodeLimits()


@dataclass(frozen=True, slots=True)
class Window:
    """Whole minutes ``[start, end)`` (Unix seconds); ``skipped`` seconds before ``start``
    were given up (older than the plan allows, or more than one query may span)."""

    start: int
    end: int
    skipped: int = 0

    @property
    def seconds(self) -> int:
        return self.end - self.start


def floor_minute(t: float) -> int:
    """The start of the minute holding ``t`` (Unix seconds)."""
    return math.floor(t / MINUTE) * MINUTE


def ceil_minute(t: float) -> int:
    return math.ceil(t / MINUTE) * MINUTE


def next_window(
    watermark: int | None,
    now: float,
    *,
    delay: float,
    interval: float,
    limits: NodeLimits = DEFAULT_LIMITS,
) -> Window | None:
    """The window a poll at ``now`` asks for, or None when no new minute has closed.

    ``end`` is ``floor_minute(now - delay)``. Without a watermark (the first poll) ``start``
    is ``end`` minus ``interval`` rounded up to whole minutes. With one, ``start`` is the
    watermark, moved forward (and the gap counted in ``skipped``) when it is older than
    ``notOlderThan`` allows (one minute of margin for the request's own travel) or when the
    window would be wider than ``maxDuration`` (the newest ``maxDuration`` is kept).
    """
    end = floor_minute(now - delay)
    if watermark is None:
        minutes = max(1, math.ceil(interval / MINUTE))
        start = end - minutes * MINUTE
    else:
        start = watermark
    if start >= end:
        return None
    skipped = 0
    oldest = ceil_minute(now - limits.not_older_than + MINUTE)
    widest = end - max(MINUTE, floor_minute(limits.max_duration))
    floor = max(oldest, widest)
    if start < floor:
        if watermark is not None:
            skipped = min(floor, end) - start
        start = floor
    if start >= end:
        return Window(end, end, skipped) if skipped else None
    return Window(start, end, skipped)
