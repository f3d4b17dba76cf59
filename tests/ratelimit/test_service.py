"""The ShouldRateLimit servicer over a real grpc.aio channel: responses, headers, hits, overrides,
backend failures, unexpected errors, metrics and health."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf import wrappers_pb2
from prometheus_client import REGISTRY

from pavilion.errors import BackendUnavailable
from pavilion.grpc_server import GrpcServer
from ratelimit.app import serving
from ratelimit.breaker import CircuitBreaker
from ratelimit.clock import ManualClock
from ratelimit.config import parse_config_text
from ratelimit.limiter import Limiter
from ratelimit.memory_store import MemoryStore
from ratelimit.metrics import OVERFLOW_LABEL, RuleMetrics
from ratelimit.service import SERVICE_NAME, RateLimitService, register
from ratelimit.store import Check, Outcome

OK, OVER = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT

CONFIG = """
domain: svc
descriptors:
  - key: client
    rate_limit: {unit: minute, requests_per_unit: 3, name: per-client}
  - key: path
    value: /login
    rate_limit: {unit: hour, requests_per_unit: 2}
    on_backend_error: deny
  - key: path
    value: /local
    rate_limit: {unit: hour, requests_per_unit: 4}
    on_backend_error: local
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: free
    rate_limit: {unlimited: true}
  - key: multi
    rate_limits:
      - {unit: second, requests_per_unit: 2, name: burst}
      - {unit: day, requests_per_unit: 100, name: daily}
  - key: five
    rate_limit: {unit: minute, unit_multiplier: 5, requests_per_unit: 10}
"""


class DownStore:
    async def apply(self, checks: Sequence[Check]) -> list[Outcome]:
        raise BackendUnavailable("redis", "down")

    async def close(self) -> None:
        pass


class BrokenLimiter(Limiter):
    async def decide(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        raise RuntimeError("a bug")


def request(*descriptors: ratelimit_pb2.RateLimitDescriptor, hits: int = 0,
            domain: str = "svc") -> rls_pb2.RateLimitRequest:
    return rls_pb2.RateLimitRequest(domain=domain, descriptors=descriptors, hits_addend=hits)


def desc(*entries: tuple[str, str], hits: int | None = None,
         limit: tuple[int, int] | None = None) -> ratelimit_pb2.RateLimitDescriptor:
    proto = ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries])
    if hits is not None:
        proto.hits_addend.CopyFrom(wrappers_pb2.UInt64Value(value=hits))
    if limit is not None:
        proto.limit.requests_per_unit, proto.limit.unit = limit
    return proto


class Client:
    def __init__(self, stub: rls_pb2_grpc.RateLimitServiceStub, clock: ManualClock, limiter: Limiter,
                 service: RateLimitService) -> None:
        self.stub, self.clock, self.limiter, self.service = stub, clock, limiter, service
        self.channel: grpc.aio.Channel | None = None

    async def __call__(self, req: rls_pb2.RateLimitRequest) -> rls_pb2.RateLimitResponse:
        response: rls_pb2.RateLimitResponse = await self.stub.ShouldRateLimit(req, timeout=5)
        return response


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    clock = ManualClock(start=1_700_000_000.0)  # 20 s into a minute, 800 s into an hour
    limiter = Limiter(parse_config_text(CONFIG), MemoryStore(clock), clock=clock)
    service = RateLimitService(limiter)
    server = GrpcServer("127.0.0.1", 0, register=register(service), service_names=[SERVICE_NAME])
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        made = Client(rls_pb2_grpc.RateLimitServiceStub(channel), clock, limiter, service)
        made.channel = channel
        yield made
    await server.stop(0)


def headers(response: rls_pb2.RateLimitResponse) -> dict[str, str]:
    return {h.key: h.value for h in response.response_headers_to_add}


async def test_statuses_and_headers_until_over_limit(client: Client) -> None:
    for remaining in (2, 1, 0):
        response = await client(request(desc(("client", "a"))))
        assert response.overall_code == OK
        [status] = response.statuses
        assert (status.code, status.limit_remaining) == (OK, remaining)
        assert status.current_limit.requests_per_unit == 3
        assert status.current_limit.unit == rls_pb2.RateLimitResponse.RateLimit.MINUTE
        assert status.current_limit.name == "per-client"
        assert status.duration_until_reset.seconds == 40
        assert headers(response) == {"RateLimit-Policy": '"per-client";q=3;w=60',
                                     "RateLimit": f'"per-client";r={remaining};t=40'}
    response = await client(request(desc(("client", "a"))))
    assert response.overall_code == OVER and response.statuses[0].code == OVER
    assert headers(response)["Retry-After"] == "40"
    assert headers(response)["RateLimit"] == '"per-client";r=0;t=40'
    # Another client value is another counter.
    assert (await client(request(desc(("client", "b"))))).overall_code == OK


async def test_several_descriptors_and_limits_in_one_request(client: Client) -> None:
    response = await client(request(desc(("multi", "x")), desc(("free", "y")), desc(("nomatch", "z"))))
    assert response.overall_code == OK
    multi, free, nomatch = response.statuses
    assert multi.current_limit.name == "burst" and multi.limit_remaining == 1
    assert free.limit_remaining == 2**32 - 1 and not free.HasField("current_limit")
    assert nomatch.code == OK and not nomatch.HasField("current_limit")
    assert headers(response)["RateLimit-Policy"] == '"burst";q=2;w=1, "daily";q=100;w=86400'
    await client(request(desc(("multi", "x"))))
    over = await client(request(desc(("multi", "x"))))
    assert over.overall_code == OVER and over.statuses[0].current_limit.name == "burst"
    assert headers(over)["Retry-After"] == "1"


async def test_hits_addend_per_request_and_per_descriptor(client: Client) -> None:
    response = await client(request(desc(("client", "h")), hits=2))
    assert response.statuses[0].limit_remaining == 1
    check_only = await client(request(desc(("client", "h"), hits=0)))
    assert check_only.overall_code == OK and check_only.statuses[0].limit_remaining == 1
    response = await client(request(desc(("client", "h"), hits=2), hits=1))  # the descriptor's wins
    assert response.overall_code == OVER


async def test_a_descriptor_limit_override(client: Client) -> None:
    response = await client(request(desc(("client", "o"), limit=(1, 3))))  # 1 per hour (envoy.type.v3 HOUR = 3)
    [status] = response.statuses
    assert status.current_limit.requests_per_unit == 1
    assert status.current_limit.unit == rls_pb2.RateLimitResponse.RateLimit.HOUR
    assert headers(response)["RateLimit-Policy"] == '"override";q=1;w=3600'
    assert (await client(request(desc(("client", "o"), limit=(1, 3))))).overall_code == OVER


async def test_a_bad_override_unit_is_answered_ok_not_an_error(client: Client) -> None:
    response = await client(request(desc(("client", "o"), limit=(1, 0))))
    assert response.overall_code == OK and not response.statuses


async def test_shadow_mode_counts_but_answers_ok(client: Client) -> None:
    await client(request(desc(("shadow", "s"))))
    response = await client(request(desc(("shadow", "s"))))
    assert response.overall_code == OK and response.statuses[0].code == OK
    assert "Retry-After" not in headers(response)


async def test_unit_multiplier_is_reported_truthfully(client: Client) -> None:
    response = await client(request(desc(("five", "m"))))
    assert "300s" in response.statuses[0].current_limit.name
    assert headers(response)["RateLimit-Policy"].endswith(";q=10;w=300")


async def test_backend_down_follows_each_rules_on_backend_error(client: Client) -> None:
    client.limiter.store = DownStore()
    allowed = await client(request(desc(("client", "a"))))
    assert allowed.overall_code == OK and "RateLimit" not in headers(allowed)
    denied = await client(request(desc(("path", "/login"))))
    assert denied.overall_code == OVER and "Retry-After" in headers(denied)
    for _ in range(4):
        local = await client(request(desc(("path", "/local"))))
        assert local.overall_code == OK
    assert (await client(request(desc(("path", "/local"))))).overall_code == OVER


async def test_an_unexpected_error_is_a_decided_ok() -> None:
    before = _requests("OK", "internal_error")
    limiter = BrokenLimiter(parse_config_text(CONFIG), MemoryStore())
    service = RateLimitService(limiter)
    server = GrpcServer("127.0.0.1", 0, register=register(service), service_names=[SERVICE_NAME])
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)
            response = await stub.ShouldRateLimit(request(desc(("client", "a"))), timeout=5)
        assert response.overall_code == OK
        service.metrics.flush()
        assert _requests("OK", "internal_error") - before == 1
    finally:
        await server.stop(0)


def _requests(code: str, cause: str) -> float:
    return REGISTRY.get_sample_value("pavilion_ratelimit_requests_total", {"code": code, "cause": cause}) or 0.0


async def test_a_repeated_request_is_planned_once_and_again_after_a_config_swap(client: Client) -> None:
    req = request(desc(("client", "swap")))
    first = await client(req)
    second = await client(req)
    assert len(client.service._plans) == 1  # the same bytes: one plan
    assert [r.statuses[0].limit_remaining for r in (first, second)] == [2, 1]
    client.limiter.config = parse_config_text(CONFIG.replace("requests_per_unit: 3", "requests_per_unit: 10"))
    third = await client(req)  # the kept plan is stale: the new limit counts at once
    assert third.statuses[0].current_limit.requests_per_unit == 10
    assert third.statuses[0].limit_remaining == 7


async def test_kept_plans_are_bounded(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ratelimit.service.REQUEST_PLANS", 2)
    for value in ("a", "b", "c", "a"):
        await client(request(desc(("client", f"bound-{value}"))))
    assert len(client.service._plans) == 2


async def test_a_large_request_is_answered_but_its_plan_not_kept(client: Client) -> None:
    long_value = "x" * 4000  # a descriptor value from a long header, say
    first = await client(request(desc(("client", long_value))))
    second = await client(request(desc(("client", long_value))))
    assert [r.statuses[0].limit_remaining for r in (first, second)] == [2, 1]  # counted all the same
    assert len(client.service._plans) == 0


async def test_bytes_that_are_not_a_request_are_a_decided_ok(client: Client) -> None:
    before = _requests("OK", "malformed_request")
    assert client.channel is not None
    call = client.channel.unary_unary(f"/{SERVICE_NAME}/ShouldRateLimit", request_serializer=None,
                               response_deserializer=rls_pb2.RateLimitResponse.FromString)
    response = await call(b"\x0a\xff\xff\xff", timeout=5)  # a field whose length runs past the end
    assert response.overall_code == OK
    client.service.metrics.flush()
    assert _requests("OK", "malformed_request") - before == 1


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"pavilion_ratelimit_{name}_total", labels) or 0.0


async def test_metrics_per_rule_by_name_or_key_path(client: Client) -> None:
    before = {n: _sample(n, domain="svc", rule="per-client")
              for n in ("total_hits", "over_limit", "near_limit", "within_limit")}
    handled_before = REGISTRY.get_sample_value("pavilion_ratelimit_request_seconds_count") or 0.0
    for _ in range(4):
        await client(request(desc(("client", "metrics-value"))))
    client.service.metrics.flush()  # counts reach Prometheus in batches (every FLUSH_SECONDS)
    handled = REGISTRY.get_sample_value("pavilion_ratelimit_request_seconds_count") or 0.0
    assert handled - handled_before >= 4  # handling times too (other tests' services may flush meanwhile)
    after = {n: _sample(n, domain="svc", rule="per-client") for n in before}
    assert after["total_hits"] - before["total_hits"] == 4
    assert after["over_limit"] - before["over_limit"] == 1
    assert after["within_limit"] - before["within_limit"] == 3
    assert after["near_limit"] - before["near_limit"] == 1  # the 3rd of 3: past 80 %
    shadow_before = _sample("shadow_mode", domain="svc", rule="svc.shadow")
    await client(request(desc(("shadow", "m"))))
    await client(request(desc(("shadow", "m"))))
    client.service.metrics.flush()
    assert _sample("shadow_mode", domain="svc", rule="svc.shadow") - shadow_before == 1


def test_metric_labels_are_capped() -> None:
    metrics = RuleMetrics(cap=2)
    assert metrics.label("d", "a") == ("d", "a")
    assert metrics.label("d", "b") == ("d", "b")
    assert metrics.label("d", "c") == ("d", OVERFLOW_LABEL)
    assert metrics.label("d", "a") == ("d", "a")


async def test_health_is_not_serving_only_when_the_breaker_is_open_and_a_rule_denies() -> None:
    breaker = CircuitBreaker(DownStore(), failures_to_open=1, cool_down=60)
    config = parse_config_text(CONFIG)
    allow_only = parse_config_text("domain: x\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, "
                                   "requests_per_unit: 1}\n")
    assert serving(config, breaker) and serving(config, None)
    with pytest.raises(BackendUnavailable):
        await breaker.apply([Check("k", "fixed_window", 1, 1)])
    assert not serving(config, breaker)
    assert serving(allow_only, breaker)
