"""`pavilion ratelimit --workers 2` on one Redis: both workers serve the port, counting stays exact,
and the parent's /metrics sums the workers."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from tests.integration.ratelimit_procs import start_ratelimit
from tests.procs import start_redis

pytestmark = pytest.mark.integration

CONFIG = "domain: w\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 10, name: ten}\n"


def test_two_workers_count_exactly_and_report_one_sum(tmp_path: Path) -> None:
    config = tmp_path / "ratelimit.yaml"
    config.write_text(CONFIG)
    redis, redis_port = start_redis()
    service = None
    try:
        service, port, admin = start_ratelimit(config, extra=["--workers", "2", "--redis-timeout-ms", "1000",
                                                              "--redis", f"redis://127.0.0.1:{redis_port}"])
        proc = service
        proc.wait_until(lambda: proc.output().count("ratelimit_started") == 2, 30, "serving in both workers")
        request = rls_pb2.RateLimitRequest(domain="w", descriptors=[ratelimit_pb2.RateLimitDescriptor(
            entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="k", value="v")])])
        codes = []
        for _ in range(30):
            # A fresh connection each time, so SO_REUSEPORT spreads them over both workers.
            with grpc.insecure_channel(f"127.0.0.1:{port}",
                                       options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                stub = rls_pb2_grpc.RateLimitServiceStub(channel)
                codes.append(stub.ShouldRateLimit(request, timeout=10).overall_code)
        assert codes.count(rls_pb2.RateLimitResponse.OK) == 10
        # Each worker adds its counts to Prometheus in batches (every ratelimit.metrics.FLUSH_SECONDS).
        deadline = time.monotonic() + 10
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as response:
                metrics = response.read().decode()
            totals = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                      if line.startswith('pavilion_ratelimit_total_hits_total{domain="w",rule="ten"}')]
            if (totals and totals[0] >= 30) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert totals == [30]
    finally:
        if service is not None:
            service.stop()
        redis.stop()
