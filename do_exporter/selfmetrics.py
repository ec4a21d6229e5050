"""The exporter's own request metrics, updated by the API client as requests happen.

These change during a poll, so unlike the snapshot's families they are rendered on every
scrape; they are few (endpoints x status codes) and cheap to render.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import Counter, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from . import __version__
from .cloudflare import INVALID_RESPONSE, TRANSPORT
from .collector import SELF
from .tokenhealth import TokenHealthMetrics

ENDPOINTS = ("accounts", "namespaces", "objects", "verify")
DURATION_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ExporterMetrics(Collector):
    """Implements the client's ``RequestObserver`` and exposes what it observed.

    The metric objects are not registered anywhere globally (``registry=None``); this
    collector yields them with their ``_created`` samples removed, as the contract wants.
    """

    def __init__(self) -> None:
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
        self._remaining: int | None = None
        self._lock = threading.Lock()
        # Each credential's token status and expiry, set by Exporter.verify_tokens().
        self.token_health = TokenHealthMetrics()

    # -- RequestObserver ------------------------------------------------------------------

    def request_finished(self, endpoint: str, code: str, seconds: float) -> None:
        self.requests.labels(endpoint, code).inc()
        self.duration.labels(endpoint).observe(seconds)

    def api_error(self, endpoint: str, error_code: str) -> None:
        self.errors.labels(endpoint, error_code).inc()

    def label_truncated(self) -> None:
        self.truncated.inc()

    def ratelimit_remaining(self, remaining: int) -> None:
        with self._lock:
            self._remaining = remaining

    # -- Collector ------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        for metric in (self.requests, self.duration, self.errors, self.truncated, self.build):
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
        yield from self.token_health.collect()

    def describe(self) -> Iterator[Metric]:
        for metric in (self.requests, self.duration, self.errors, self.truncated, self.build):
            yield from metric.describe()
        yield GaugeMetricFamily(f"{SELF}_api_ratelimit_remaining", "")
        yield from self.token_health.describe()
