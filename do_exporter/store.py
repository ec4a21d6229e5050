"""The latest snapshot and its rendered exposition, swapped in together.

The poller publishes; scrapes read. Publishing renders the snapshot once, in the poller's
thread, writing again only what changed since the last snapshot
(:class:`~do_exporter.metrics.snapshot.SnapshotRenderer`); a scrape only sends the bytes
held. Readers take one attribute (a tuple) and never see a half-updated pair.
"""

from __future__ import annotations

import threading

from .metrics.contract import ALL_GROUPS
from .metrics.render import Exposition
from .metrics.snapshot import SnapshotRenderer
from .model import Snapshot


class SnapshotStore:
    """Holds the snapshot with its exposition, in one form: deflate segments per family and
    account (:class:`~do_exporter.metrics.render.Exposition`). A scrape that asks for gzip
    gets them as they are, followed by a segment of the exporter's own metrics, between a
    gzip header and trailer: one gzip member, which every client decodes; the rare scrape
    without gzip gets the text inflated while it is sent.
    """

    def __init__(
        self, snapshot: Snapshot | None = None, *, enabled: frozenset[str] = ALL_GROUPS
    ) -> None:
        self.enabled = frozenset(enabled)
        self._renderer = SnapshotRenderer(self.enabled)
        self._lock = threading.Lock()  # one render at a time (the renderer keeps state)
        self._current = self._prepare(snapshot or Snapshot())

    def _prepare(self, snapshot: Snapshot) -> tuple[Snapshot, Exposition]:
        with self._lock:
            return snapshot, self._renderer.render(snapshot)

    @property
    def snapshot(self) -> Snapshot:
        return self._current[0]

    @property
    def rendered(self) -> Exposition:
        return self._current[1]

    @property
    def exposition(self) -> bytes:
        """The plain text, whole (tests; a scrape streams :attr:`rendered`'s parts, see
        :meth:`do_exporter.app.Exporter.exposition_parts`)."""
        return self._current[1].text()

    def publish(self, snapshot: Snapshot) -> None:
        self._current = self._prepare(snapshot)
