"""The latest snapshot and its rendered exposition, swapped in together.

The poller publishes; scrapes read. Publishing renders the snapshot's exposition once, in the
poller's thread, so a scrape only copies bytes however many namespaces there are. Readers
take one attribute (a tuple) and never see a half-updated pair.
"""

from __future__ import annotations

from .collector import render
from .model import Snapshot


class SnapshotStore:
    def __init__(self, snapshot: Snapshot | None = None) -> None:
        initial = snapshot or Snapshot()
        self._current: tuple[Snapshot, bytes] = (initial, render(initial))

    @property
    def snapshot(self) -> Snapshot:
        return self._current[0]

    @property
    def exposition(self) -> bytes:
        return self._current[1]

    def publish(self, snapshot: Snapshot) -> None:
        self._current = (snapshot, render(snapshot))
