"""Where a count becomes a metric (kept for its old import path).

The families are declared in :mod:`do_exporter.metrics.contract`, built by
:mod:`do_exporter.metrics.inventory` and :mod:`do_exporter.metrics.usage`, and written by
:mod:`do_exporter.metrics.render`. :func:`render` turns one snapshot into exposition bytes;
the daemon keeps a :class:`~do_exporter.metrics.snapshot.SnapshotRenderer` instead
(:class:`~do_exporter.store.SnapshotStore`), so a poll writes only what changed and a scrape
never renders.
"""

from __future__ import annotations

from .metrics.contract import INFO_LABELS, NS_LABELS, PREFIX, SELF
from .metrics.snapshot import SnapshotRenderer, render

__all__ = ["INFO_LABELS", "NS_LABELS", "PREFIX", "SELF", "SnapshotRenderer", "render"]
