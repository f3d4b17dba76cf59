"""Prometheus metrics: one registry per process, rendered by the admin HTTP server.

With `--workers N` each worker is its own process; prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by `pavilion.workers`) sums them on scrape.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

NAMESPACE = "pavilion"

__all__ = ["CONTENT_TYPE_LATEST", "NAMESPACE", "Counter", "Gauge", "Histogram", "render_metrics"]


def render_metrics() -> bytes:
    """The text exposition of every metric of this process, or of all workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(DEFAULT_REGISTRY)
