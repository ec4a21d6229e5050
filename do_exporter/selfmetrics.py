"""The exporter's own metrics (kept for its old import path): see
:mod:`do_exporter.metrics.selfmetrics`."""

from __future__ import annotations

from .metrics.contract import DURATION_BUCKETS, ENDPOINTS
from .metrics.selfmetrics import RENDER_EVERY, ExporterMetrics

__all__ = ["DURATION_BUCKETS", "ENDPOINTS", "RENDER_EVERY", "ExporterMetrics"]
