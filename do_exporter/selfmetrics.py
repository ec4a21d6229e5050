"""The exporter's own request metrics, updated by the API client as requests happen.

These change during a poll, so unlike the snapshot's families they are not rendered once per
snapshot; :meth:`ExporterMetrics.exposition` renders (and gzips) them at most once per
:data:`RENDER_EVERY` second however often ``/metrics`` is scraped, and once more per
published snapshot: what a scrape serves is at most a second old, and never older than the
snapshot served with it. Rendering 60 lines through prometheus-client took about as long as
the rest of an idle gzip scrape (docs/benchmarks.md).
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import Counter, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from . import __version__
from .cloudflare import INVALID_RESPONSE, TRANSPORT
from .collector import SELF

ENDPOINTS = ("accounts", "namespaces", "objects")
DURATION_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RENDER_EVERY = 1.0  # seconds a rendered exposition of these metrics is served again


class ExporterMetrics(Collector):
    """Implements the client's ``RequestObserver`` and exposes what it observed.

    The metric objects are not registered anywhere globally (``registry=None``); this
    collector yields them with their ``_created`` samples removed, as the contract wants.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._render_lock = threading.Lock()
        self._rendered_at: float | None = None
        self._text = b""
        self._gzipped: bytes | None = None
        self._epoch: object = None
        self.requests = Counter(
            f"{SELF}_api_requests",
            "HTTP requests to the Cloudflare API, by endpoint and status code "
            "(code=transport when no response came).",
            ["endpoint", "code"],
            registry=None,
        )
        self.duration = Histogram(
            f"{SELF}_api_request_duration_seconds",
            "Latency of Cloudflare API requests.",
            ["endpoint"],
            buckets=DURATION_BUCKETS,
            registry=None,
        )
        self.errors = Counter(
            f"{SELF}_api_errors",
            "Failed Cloudflare API requests, by Cloudflare error code "
            "(or transport / invalid_response).",
            ["endpoint", "error_code"],
            registry=None,
        )
        self.build = Info(f"{SELF}_build", "do-exporter build information.", registry=None)
        self.build.info({"version": __version__})
        # Every series reads 0 from the start, so rate() and alerts work before a failure.
        for endpoint in ENDPOINTS:
            self.duration.labels(endpoint)
            for code in (TRANSPORT, INVALID_RESPONSE):
                self.errors.labels(endpoint, code)
        self._remaining: int | None = None
        self._lock = threading.Lock()

    # -- RequestObserver ------------------------------------------------------------------

    def request_finished(self, endpoint: str, code: str, seconds: float) -> None:
        self.requests.labels(endpoint, code).inc()
        self.duration.labels(endpoint).observe(seconds)

    def api_error(self, endpoint: str, error_code: str) -> None:
        self.errors.labels(endpoint, error_code).inc()

    def ratelimit_remaining(self, remaining: int) -> None:
        with self._lock:
            self._remaining = remaining

    # -- exposition -----------------------------------------------------------------------

    def exposition(self, compressed: bool = False, *, epoch: object = None) -> bytes:
        """The text exposition of these metrics (a gzip member if ``compressed``), rendered
        at most once per :data:`RENDER_EVERY` seconds of ``clock``, and again whenever
        ``epoch`` is not the object of the last render: the app passes the snapshot it
        serves, so these counters are never older than the snapshot beside them (a test or
        a user that waits for a poll's ``polls_total`` sees that poll's API requests)."""
        with self._render_lock:
            now = self._clock()
            at = self._rendered_at
            if at is None or not at <= now < at + RENDER_EVERY or epoch is not self._epoch:
                self._text, self._gzipped, self._rendered_at = generate_latest(self), None, now
                self._epoch = epoch
            if not compressed:
                return self._text
            if self._gzipped is None:
                self._gzipped = gzip.compress(self._text, compresslevel=1, mtime=0)
            return self._gzipped

    # -- Collector ------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        for metric in (self.requests, self.duration, self.errors, self.build):
            for family in metric.collect():
                family.samples = [s for s in family.samples if not s.name.endswith("_created")]
                yield family
        remaining = GaugeMetricFamily(
            f"{SELF}_api_ratelimit_remaining",
            "Requests left in the current rate-limit window, from the API's Ratelimit header "
            "(absent until the API has sent one).",
        )
        with self._lock:
            if self._remaining is not None:
                remaining.add_metric([], float(self._remaining))
        yield remaining

    def describe(self) -> Iterator[Metric]:
        for metric in (self.requests, self.duration, self.errors, self.build):
            yield from metric.describe()
        yield GaugeMetricFamily(f"{SELF}_api_ratelimit_remaining", "")
