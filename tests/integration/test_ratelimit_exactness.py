"""Exact counting: three `pavilion ratelimit` processes share one Redis; 2,000 concurrent requests
against a limit of 100 per hour admit exactly 100.

This measures counting, so the Redis timeout is generous: on the 2-core test machine, with three
services, the load generator and Redis all runnable, the kernel can leave Redis unscheduled for more
than the 20 ms default, and a timed-out request is (correctly) answered by `on_backend_error: allow`,
which would over-admit. The test also checks no request was answered that way.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from tests.integration.ratelimit_procs import start_ratelimit
from tests.procs import Proc, start_redis

pytestmark = pytest.mark.integration

CONFIG = """
domain: exact
descriptors:
  - key: tenant
    rate_limit: {unit: hour, requests_per_unit: 100}
"""


async def test_three_replicas_admit_exactly_the_limit(tmp_path: Path) -> None:
    config = tmp_path / "ratelimit.yaml"
    config.write_text(CONFIG)
    redis, redis_port = start_redis()
    services: list[Proc] = []
    try:
        ports = []
        for _ in range(3):
            proc, port, _admin = start_ratelimit(config, extra=["--redis", f"redis://127.0.0.1:{redis_port}",
                                                                   "--redis-timeout-ms", "1000"])
            services.append(proc)
            ports.append(port)
        request = rls_pb2.RateLimitRequest(domain="exact", descriptors=[ratelimit_pb2.RateLimitDescriptor(
            entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="tenant", value="acme")])])
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for port in ports]
        stubs = [rls_pb2_grpc.RateLimitServiceStub(channel) for channel in channels]
        in_flight = asyncio.Semaphore(200)

        async def one(index: int) -> int:
            async with in_flight:
                response = await stubs[index % 3].ShouldRateLimit(request, timeout=10)
                return int(response.overall_code)

        try:
            codes = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(2000))), 60)
        finally:
            for channel in channels:
                await channel.close()
        assert codes.count(rls_pb2.RateLimitResponse.OK) == 100
        assert codes.count(rls_pb2.RateLimitResponse.OVER_LIMIT) == 1900
        for proc in services:
            assert "ratelimit_internal_error" not in proc.output()
            assert "ratelimit_backend_unavailable" not in proc.output()  # no answer came from a fallback
    finally:
        for proc in services:
            proc.stop()
        redis.stop()
