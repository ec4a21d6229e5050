"""The exporter's own request metrics, updated by the API client as requests happen.

:class:`ExporterMetrics` implements the client's request observer protocol structurally (it
imports no HTTP client). Unlike the snapshot's families these change during a poll, so
:meth:`ExporterMetrics.exposition` writes (and gzips) them at most once per
:data:`RENDER_EVERY` second however often ``/metrics`` is scraped, and once more per
published snapshot: what a scrape serves is at most a second old, and never older than the
snapshot served with it.

Every label value from outside is bounded in number: an endpoint keeps at most
:data:`~.contract.MAX_ERROR_CODES` distinct ``error_code`` (and ``code``) values, the rest
count as ``other``, however many the API invents; values are cut to :data:`MAX_VALUE_LENGTH`.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from .. import __version__
from . import contract as c
from . import gzipstream
from .render import Row, family_lines, lines, number
from .tokens import TokenHealthMetrics

if TYPE_CHECKING:  # prometheus-client is imported only when a registry asks (memory)
    from prometheus_client.metrics_core import Metric

RENDER_EVERY = 1.0  # seconds a rendered exposition of these metrics is served again
MAX_VALUE_LENGTH = 64  # characters of an endpoint or code label value
MAX_ENDPOINTS = 16  # distinct endpoint values (the client has five)


class Budget(Protocol):
    """What the metrics read of a credential's rate limiter."""

    def reserve_held_seconds(self) -> float: ...


class _Histogram:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * len(c.DURATION_BUCKETS)
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        i = bisect.bisect_left(c.DURATION_BUCKETS, seconds)
        if i < len(self.buckets):
            self.buckets[i] += 1
        self.count += 1
        self.sum += seconds


def _bounded(seen: dict[str, set[str]], endpoint: str, value: str) -> str:
    """``value`` if it is one of the endpoint's first MAX_ERROR_CODES values, else OTHER."""
    value = str(value)[:MAX_VALUE_LENGTH]
    known = seen.setdefault(endpoint, set())
    if value in known:
        return value
    if len(known) >= c.MAX_ERROR_CODES:
        return c.OTHER
    known.add(value)
    return value


class ExporterMetrics:
    """Implements the client's ``RequestObserver`` and exposes what it observed."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()
        self._rendered_at: float | None = None
        self._text = b""
        self._segment: gzipstream.Segment | None = None
        self._epoch: object = None
        self._requests: dict[tuple[str, str], int] = {}
        self._durations: dict[str, _Histogram] = {}
        self._errors: dict[tuple[str, str], int] = {}
        self._codes: dict[str, set[str]] = {}  # distinct code values per endpoint
        self._error_codes: dict[str, set[str]] = {}
        self._truncated = 0
        self._remaining: dict[str, int] = {}
        self._budgets: dict[str, Budget] = {}
        # Every series reads 0 from the start, so rate() and alerts work before a failure.
        for endpoint in c.ENDPOINTS:
            self._durations[endpoint] = _Histogram()
            for code in (c.TRANSPORT, c.INVALID_RESPONSE):
                self._errors[(endpoint, _bounded(self._error_codes, endpoint, code))] = 0
        # Each credential's token status and expiry, set by Exporter.verify_tokens().
        self.token_health = TokenHealthMetrics()

    def add_budget(self, credential: str, limiter: Budget) -> None:
        """Report on one credential's budget (its reserve waits) under its name."""
        with self._lock:
            self._budgets[credential] = limiter

    def for_credential(self, credential: str) -> _CredentialObserver:
        """An observer for one credential's client: per-budget metrics get its name."""
        return _CredentialObserver(self, credential)

    def _endpoint(self, endpoint: str) -> str:
        endpoint = str(endpoint)[:MAX_VALUE_LENGTH]
        if endpoint in self._durations or len(self._durations) < MAX_ENDPOINTS:
            return endpoint
        return c.OTHER

    # -- the request observer -------------------------------------------------------------

    def request_finished(self, endpoint: str, code: str, seconds: float) -> None:
        with self._lock:
            endpoint = self._endpoint(endpoint)
            key = (endpoint, _bounded(self._codes, endpoint, code))
            self._requests[key] = self._requests.get(key, 0) + 1
            self._durations.setdefault(endpoint, _Histogram()).observe(seconds)

    def api_error(self, endpoint: str, error_code: str) -> None:
        with self._lock:
            endpoint = self._endpoint(endpoint)
            key = (endpoint, _bounded(self._error_codes, endpoint, error_code))
            self._errors[key] = self._errors.get(key, 0) + 1

    def label_truncated(self) -> None:
        with self._lock:
            self._truncated += 1

    def ratelimit_remaining(self, remaining: int, credential: str = "default") -> None:
        with self._lock:
            self._remaining[credential] = remaining

    # -- exposition -----------------------------------------------------------------------

    def exposition(self, compressed: bool = False, *, epoch: object = None) -> bytes:
        """The text exposition of these metrics (gzip if ``compressed``), written at most
        once per :data:`RENDER_EVERY` seconds of ``clock``, and again whenever ``epoch`` is
        not the object of the last render: the app passes the snapshot it serves, so these
        counters are never older than the snapshot beside them."""
        if not compressed:
            with self._render_lock:
                return self._render(epoch)
        segment = self.segment(epoch=epoch)
        return b"".join(gzipstream.stream((segment.data,), segment.crc, segment.length))

    def segment(self, *, epoch: object = None) -> gzipstream.Segment:
        """The same text as a raw deflate segment, to send after the snapshot's (one gzip
        member for both); compressed once per render."""
        with self._render_lock:
            text = self._render(epoch)
            if self._segment is None:
                self._segment = gzipstream.deflate(text, 1)
            return self._segment

    def _render(self, epoch: object) -> bytes:  # under self._render_lock
        now = self._clock()
        at = self._rendered_at
        if at is None or not at <= now < at + RENDER_EVERY or epoch is not self._epoch:
            self._text, self._segment, self._rendered_at = self.text().encode(), None, now
            self._epoch = epoch
        return self._text

    def text(self) -> str:
        """These families, written now."""
        out = [f.header + body for f, body in self._families()]
        return "".join(out) + self.token_health.text()

    def _families(self) -> list[tuple[c.Family, str]]:
        with self._lock:
            requests = [((e, code), float(n)) for (e, code), n in self._requests.items()]
            errors = [((e, code), float(n)) for (e, code), n in self._errors.items()]
            duration = self._duration_lines()
            truncated = float(self._truncated)
            remaining = [((k,), float(v)) for k, v in sorted(self._remaining.items())]
            budgets = sorted(self._budgets.items())
        waited: list[Row] = [((k,), b.reserve_held_seconds()) for k, b in budgets]
        return [
            (c.API_REQUESTS, family_lines(c.API_REQUESTS, requests)),
            (c.API_DURATION, duration),
            (c.API_ERRORS, family_lines(c.API_ERRORS, errors)),
            (c.LABELS_TRUNCATED, family_lines(c.LABELS_TRUNCATED, [((), truncated)])),
            (c.BUILD_INFO, family_lines(c.BUILD_INFO, [((__version__,), 1.0)])),
            (c.RATELIMIT_REMAINING, family_lines(c.RATELIMIT_REMAINING, remaining)),
            (c.RESERVE_WAIT, family_lines(c.RESERVE_WAIT, waited)),
        ]

    def _duration_lines(self) -> str:
        name = c.API_DURATION.name
        bounds = [*(number(b) for b in c.DURATION_BUCKETS), "+Inf"]
        out = []
        for endpoint, h in self._durations.items():
            total, rows = 0, []
            for bound, n in zip(bounds, [*h.buckets, h.count - sum(h.buckets)], strict=True):
                total += n
                rows.append(((endpoint, bound), float(total)))
            out.append(lines(name + "_bucket", ("endpoint", "le"), rows))
            out.append(lines(name + "_count", ("endpoint",), [((endpoint,), float(h.count))]))
            out.append(lines(name + "_sum", ("endpoint",), [((endpoint,), h.sum)]))
        return "".join(out)

    # -- prometheus-client's Collector (tests read samples through a registry) ------------

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.parser import text_string_to_metric_families

        return iter(text_string_to_metric_families(self.text()))

    def describe(self) -> Iterator[Metric]:
        return iter(())


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
