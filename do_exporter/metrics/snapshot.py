"""A snapshot's exposition: inventory then usage analytics, rendered incrementally."""

from __future__ import annotations

import itertools

from ..model import Snapshot
from . import contract as c
from . import inventory, usage
from .render import Exposition, Renderer


class SnapshotRenderer:
    """Renders successive snapshots, writing again only the parts that changed."""

    def __init__(self, enabled: frozenset[str] = c.ALL_GROUPS) -> None:
        self.renderer = Renderer(enabled)

    def render(self, snapshot: Snapshot) -> Exposition:
        esc = self.renderer.escape
        families = list(c.INVENTORY_FAMILIES)
        parts = inventory.parts(snapshot, esc)
        if snapshot.analytics:  # usage analytics: only when they are polled
            present = usage.families()
            families += present
            parts = itertools.chain(parts, usage.parts(snapshot, present, esc))
        return self.renderer.render(families, parts)


def render(snapshot: Snapshot, enabled: frozenset[str] = c.ALL_GROUPS) -> bytes:
    """The text exposition of one snapshot (tests, benchmarks; the daemon keeps a renderer)."""
    return SnapshotRenderer(enabled).render(snapshot).text()
