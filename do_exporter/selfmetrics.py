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
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from . import __version__
from .observe import INVALID_RESPONSE, TRANSPORT, RequestObserver
from .collector import SELF
from .ratelimit import RateLimiter
from .tokenhealth import TokenHealthMetrics

ENDPOINTS = ("accounts", "namespaces", "objects", "graphql", "verify")
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
        self.truncated = Counter(
            f"{SELF}_label_values_truncated",
            "Label values from the API (namespace name, class, script; account name) cut to "
            "1024 characters, ending in '...[truncated]'.",
            registry=None,
        )
        self.build = Info(f"{SELF}_build", "do-exporter build information.", registry=None)
        self.build.info({"version": __version__})
        # Every series reads 0 from the start, so rate() and alerts work before a failure.
        for endpoint in ENDPOINTS:
            self.duration.labels(endpoint)
            for code in (TRANSPORT, INVALID_RESPONSE):
                self.errors.labels(endpoint, code)
        self._remaining: dict[str, int] = {}
        self._budgets: dict[str, RateLimiter] = {}
        self._lock = threading.Lock()
        # Each credential's token status and expiry, set by Exporter.verify_tokens().
        self.token_health = TokenHealthMetrics()

    def add_budget(self, credential: str, limiter: RateLimiter) -> None:
        """Report on one credential's budget (its reserve waits) under its name."""
        with self._lock:
            self._budgets[credential] = limiter

    def for_credential(self, credential: str) -> RequestObserver:
        """An observer for one credential's client: per-budget metrics get its name."""
        return _CredentialObserver(self, credential)

    # -- RequestObserver ------------------------------------------------------------------

    def request_finished(self, endpoint: str, code: str, seconds: float) -> None:
        self.requests.labels(endpoint, code).inc()
        self.duration.labels(endpoint).observe(seconds)

    def api_error(self, endpoint: str, error_code: str) -> None:
        self.errors.labels(endpoint, error_code).inc()

    def label_truncated(self) -> None:
        self.truncated.inc()

    def ratelimit_remaining(self, remaining: int, credential: str = "default") -> None:
        with self._lock:
            self._remaining[credential] = remaining

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
        for metric in (self.requests, self.duration, self.errors, self.truncated, self.build):
            for family in metric.collect():
                family.samples = [s for s in family.samples if not s.name.endswith("_created")]
                yield family
        remaining, waited = self._budget_families()
        with self._lock:
            for credential, left in sorted(self._remaining.items()):
                remaining.add_metric([credential], float(left))
            for credential, limiter in sorted(self._budgets.items()):
                waited.add_metric([credential], limiter.reserve_held_seconds())
        yield remaining
        yield waited
        yield from self.token_health.collect()

    @staticmethod
    def _budget_families() -> tuple[GaugeMetricFamily, CounterMetricFamily]:
        remaining = GaugeMetricFamily(
            f"{SELF}_api_ratelimit_remaining",
            "Requests left to the API user in Cloudflare's current rate-limit window, from the "
            "API's Ratelimit header (absent until the API has sent one).",
            labels=["credential"],
        )
        waited = CounterMetricFamily(
            f"{SELF}_api_reserve_wait_seconds",
            "Seconds every request of the credential was held because the user's budget was "
            "down to --api-reserve (left to the user's other tools).",
            labels=["credential"],
        )
        return remaining, waited

    def describe(self) -> Iterator[Metric]:
        for metric in (self.requests, self.duration, self.errors, self.truncated, self.build):
            yield from metric.describe()
        yield from self._budget_families()
        yield from self.token_health.describe()


class _CredentialObserver:
    """Passes a client's reports on, naming its credential where a metric is per budget."""

    def __init__(self, metrics: ExporterMetrics, credential: str) -> None:
        self._metrics = metrics
        self._credential = credential

    def request_finished(self, endpoint: str, code: str, seconds: float) -> None:
        self._metrics.request_finished(endpoint, code, seconds)

    def api_error(self, endpoint: str, error_code: str) -> None:
        self._metrics.api_error(endpoint, error_code)

    def label_truncated(self) -> None:
        self._metrics.label_truncated()

    def ratelimit_remaining(self, remaining: int) -> None:
        self._metrics.ratelimit_remaining(remaining, self._credential)
