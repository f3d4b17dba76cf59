"""Redis killed and restarted under a running `pavilion ratelimit`: while it is down every answer
follows the rule's on_backend_error and comes within the timeout; health says NOT_SERVING while
the breaker is open (a rule says deny); everything recovers when Redis is back."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.ratelimit_procs import start_ratelimit
from tests.procs import Proc, start_redis

pytestmark = pytest.mark.integration

OK, OVER = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING

CONFIG = """
domain: outage
descriptors:
  - key: mode
    value: allow
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: mode
    value: deny
    on_backend_error: deny
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: mode
    value: local
    on_backend_error: local
    rate_limit: {unit: hour, requests_per_unit: 2}
"""


def ask(stub: rls_pb2_grpc.RateLimitServiceStub, mode: str) -> tuple[int, float, rls_pb2.RateLimitResponse]:
    request = rls_pb2.RateLimitRequest(domain="outage", descriptors=[ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="mode", value=mode)])])
    started = time.monotonic()
    response = stub.ShouldRateLimit(request, timeout=5)
    return response.overall_code, time.monotonic() - started, response


def health(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = stub.Check(health_pb2.HealthCheckRequest(service="envoy.service.ratelimit.v3.RateLimitService"),
                          timeout=5)
    return int(response.status)


def wait_for(predicate, what: str, deadline: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError(what)
        time.sleep(0.05)


def test_redis_down_then_back(tmp_path: Path) -> None:
    config = tmp_path / "ratelimit.yaml"
    config.write_text(CONFIG)
    redis, redis_port = start_redis()
    restarted: Proc | None = None
    service, port, admin = start_ratelimit(config, extra=["--redis", f"redis://127.0.0.1:{redis_port}",
                                                          "--redis-timeout-ms", "50"])

    def store() -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=5) as answer:
            return dict(json.loads(answer.read())["store"])

    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)
            assert [ask(stub, "deny")[0] for _ in range(3)] == [OK, OK, OVER]  # Redis counts
            for mode in ("allow", "local"):
                assert [ask(stub, mode)[0] for _ in range(2)] == [OK, OK]  # within the limit
            assert health(channel) == SERVING
            assert store() == {"kind": "redis", "address": f"127.0.0.1:{redis_port}", "db": 0, "tls": False,
                               "auth": False, "breaker": "closed", "serving": True}

            redis.kill()
            for _ in range(8):  # enough to open the breaker (5 failures)
                code, took, response = ask(stub, "allow")
                assert code == OK and took < 2.0  # well inside the 5 s deadline: never hangs
                assert "RateLimit" not in {h.key for h in response.response_headers_to_add}
            # deny was over in Redis before it died: known over for the rest of the window, whatever
            # the backend (its answer carries the real counts, so the RateLimit header too)
            code, took, response = ask(stub, "deny")
            assert code == OVER and took < 2.0
            assert "RateLimit" in {h.key for h in response.response_headers_to_add}
            # local: the limit in this replica's memory, from zero (Redis's counts are out of reach)
            assert [ask(stub, "local")[0] for _ in range(3)] == [OK, OK, OVER]
            wait_for(lambda: health(channel) == NOT_SERVING, "health NOT_SERVING while Redis is down")
            down = store()  # open, or half-open while its probe is out (usable then, so serving)
            assert down["breaker"] in ("open", "half_open") and down["serving"] is (down["breaker"] == "half_open")

            restarted, _ = start_redis(port=redis_port)
            # The breaker's half-open probe (sent even without traffic) closes it again.
            wait_for(lambda: health(channel) == SERVING, "health SERVING once Redis is back")
            wait_for(lambda: store()["breaker"] == "closed", "the breaker closed on /status")
            # The new Redis starts empty: allow counts again from zero (its two hits died with the old one).
            assert [ask(stub, "allow")[0] for _ in range(3)] == [OK, OK, OVER]
            assert ask(stub, "deny")[0] == OVER  # still known over in this window
        assert "ratelimit_internal_error" not in service.output()
    finally:
        service.stop()
        redis.stop()
        if restarted is not None:
            restarted.stop()
