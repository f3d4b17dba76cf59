"""Prometheus metrics: one registry per process, rendered by the admin HTTP server.

With `--workers N` each worker is its own process; prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by `pavilion.workers`) sums them on scrape.
"""

from __future__ import annotations

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

from pavilion.workers import shared_directory

NAMESPACE = "pavilion"

__all__ = ["CONTENT_TYPE_LATEST", "GRPC_SERVING", "NAMESPACE", "Counter", "Gauge", "Histogram", "any_worker_serving",
           "render_metrics"]

# 1 while this process's gRPC server is started (a service starts it once it can answer: config or
# first xDS update in hand); with --workers, the parent is ready while a live worker says 1.
_GRPC_SERVING_NAME = f"{NAMESPACE}_grpc_serving"
GRPC_SERVING = Gauge(_GRPC_SERVING_NAME, "1 while this process's gRPC server serves", multiprocess_mode="livemax")


def _registry() -> CollectorRegistry:
    if shared_directory():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return DEFAULT_REGISTRY


def render_metrics() -> bytes:
    """The text exposition of every metric of this process, or of all workers in multiprocess mode."""
    return generate_latest(_registry())


def any_worker_serving() -> bool:
    """A live process (a worker, with --workers) has its gRPC server started."""
    return any(sample.value >= 1 for metric in _registry().collect() if metric.name == _GRPC_SERVING_NAME
               for sample in metric.samples)
