"""The latest snapshot and its rendered exposition, swapped in together.

The poller publishes; scrapes read. Publishing renders the snapshot's exposition once, in the
poller's thread, so a scrape only copies bytes however many namespaces there are. Readers
take one attribute (a tuple) and never see a half-updated pair.
"""

from __future__ import annotations

import gzip

from .collector import render
from .model import Snapshot


class SnapshotStore:
    """Holds the snapshot with its exposition, plain and gzip-compressed.

    The gzip form is one complete gzip member: a scrape that asks for gzip gets it followed
    by a second member for the exporter's own metrics, which every gzip reader (Prometheus'
    included) decodes as one stream (RFC 1952, section 2.2).
    """

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self._current = self._prepare(snapshot or Snapshot())

    @staticmethod
    def _prepare(snapshot: Snapshot) -> tuple[Snapshot, bytes, bytes]:
        text = render(snapshot)
        return snapshot, text, gzip.compress(text, compresslevel=6, mtime=0)

    @property
    def snapshot(self) -> Snapshot:
        return self._current[0]

    @property
    def exposition(self) -> bytes:
        return self._current[1]

    @property
    def exposition_gzip(self) -> bytes:
        return self._current[2]

    def publish(self, snapshot: Snapshot) -> None:
        self._current = self._prepare(snapshot)
