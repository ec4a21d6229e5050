"""The exporter's own metrics are rendered at most once a second, on a clock the test steps."""

from __future__ import annotations

import gzip

from do_exporter.selfmetrics import RENDER_EVERY, ExporterMetrics


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
