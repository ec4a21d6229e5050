"""The exporter's own metrics are rendered at most once a second, on a clock the test steps."""

from __future__ import annotations

import gzip

from do_exporter.metrics.selfmetrics import RENDER_EVERY, ExporterMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def requests_line(text: bytes) -> bytes:
    return next(
        line
        for line in text.splitlines()
        if line.startswith(b"cloudflare_durable_objects_exporter_api_requests_total{")
    )


def test_rendered_once_per_second_whatever_the_scrapes() -> None:
    """Within a second the same bytes are served (no new render); a second later the new
    counts show, plain and gzip alike."""
    clock = Clock()
    metrics = ExporterMetrics(clock=clock)
    metrics.request_finished("objects", "200", 0.1)
    first = metrics.exposition()
    assert b'code="200",endpoint="objects"} 1.0' in requests_line(first)
    metrics.request_finished("objects", "200", 0.1)
    clock.now += RENDER_EVERY * 0.99
    assert metrics.exposition() is first  # the cached render, not an equal new one
    assert gzip.decompress(metrics.exposition(compressed=True)) == first
    clock.now += RENDER_EVERY * 0.02
    second = metrics.exposition()
    assert b'code="200",endpoint="objects"} 2.0' in requests_line(second)
    assert gzip.decompress(metrics.exposition(compressed=True)) == second


def test_a_clock_that_goes_back_renders_again() -> None:
    """A clock stepped backwards (not monotonic) never pins an old render."""
    clock = Clock()
    metrics = ExporterMetrics(clock=clock)
    first = metrics.exposition()
    metrics.api_error("objects", "10000")
    clock.now -= 5
    assert metrics.exposition() != first


def test_a_new_epoch_renders_again_within_the_second() -> None:
    """A new snapshot (the epoch) gets own metrics rendered after it, even within the second;
    the same epoch keeps the cached render."""
    clock = Clock()
    metrics = ExporterMetrics(clock=clock)
    first_snapshot, second_snapshot = object(), object()
    first = metrics.exposition(epoch=first_snapshot)
    metrics.request_finished("objects", "403", 0.1)
    assert metrics.exposition(epoch=first_snapshot) is first
    second = metrics.exposition(epoch=second_snapshot)
    assert b'code="403"' in second and b'code="403"' not in first


def test_error_codes_stay_bounded_whatever_the_api_sends() -> None:
    """20,000 distinct error codes (and status codes) from the API: a bounded number of
    series per endpoint, the rest counted as `other`, every failure still counted."""
    from prometheus_client.parser import text_string_to_metric_families

    from do_exporter.metrics.contract import MAX_ERROR_CODES

    metrics = ExporterMetrics(clock=Clock())
    for i in range(20_000):
        metrics.api_error("graphql", str(100_000 + i))
        metrics.request_finished("graphql", str(i), 0.01)
    metrics.api_error("graphql\ud800" * 100, "\ud800")  # invalid text never crashes
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    errors = [
        s for s in families["cloudflare_durable_objects_exporter_api_errors"].samples
        if s.labels["endpoint"] == "graphql"
    ]  # fmt: skip
    assert len(errors) == MAX_ERROR_CODES + 1
    assert sum(s.value for s in errors) == 20_000
    assert {"transport", "invalid_response", "other"} <= {s.labels["error_code"] for s in errors}
    requests = families["cloudflare_durable_objects_exporter_api_requests"].samples
    assert len(requests) <= MAX_ERROR_CODES + 1
    assert len(metrics.exposition()) < 64 * 1024
