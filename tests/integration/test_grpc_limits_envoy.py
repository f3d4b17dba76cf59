"""gRPC callers over a limit, through the real control plane, Envoy and `pavilion ratelimit`: the call ends
RESOURCE_EXHAUSTED, whether the ratelimit service or Envoy's local bucket refused it. Envoy's default for a
429 is UNAVAILABLE, the status gRPC clients retry at once.

The upstream is `pavilion ratelimit`'s own grpc.health.v1 service, so no extra process is needed: two
routes to it differ by a header, one limited by the service (1 an hour), one by Envoy alone. With
`error_responses: {format: problem_json}`, whose mappers must leave gRPC requests to Envoy's trailers-only
answer; a plain HTTP request over the limit gets problem details."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controlplane.config.load import load_config
from controlplane.envoy_check import check_with_envoy
from tests.integration.gateway_procs import running_gateway, start_xds_service
from tests.procs import ENVOY, free_port

pytestmark = pytest.mark.integration

CONFIG = """regions: [eu-west]
listeners: [{{name: edge, address: 127.0.0.1, port: {edge}}}]
services:
  - name: ratelimit
    protocol: grpc
    endpoints: [{{address: 127.0.0.1:{ratelimit}, region: eu-west}}]
ratelimit: {{service: ratelimit, timeout: 2s}}
error_responses: {{format: problem_json}}
routes:
  - name: global
    match: {{path: /grpc.health.v1.Health/Check, headers: {{x-limit: global}}}}
    service: ratelimit
    rate_limits: [{{unit: hour, requests: 1}}]
  - name: local
    match: {{path: /grpc.health.v1.Health/Check, headers: {{x-limit: local}}}}
    service: ratelimit
    local_rate_limit: {{unit: hour, requests: 1}}
"""


@pytest.fixture(scope="module")
def edge_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    routes = tmp_path_factory.mktemp("routes")
    edge, ratelimit_port = free_port(), free_port()
    (routes / "gateway.yaml").write_text(CONFIG.format(edge=edge, ratelimit=ratelimit_port))
    assert check_with_envoy(load_config(routes), ENVOY) == []
    with running_gateway(routes, edge, {}) as gateway:
        ratelimit = start_xds_service("ratelimit", gateway.plane, ratelimit_port, "ratelimit-local")
        try:
            yield edge
        finally:
            ratelimit.stop()


def health_check(port: int, limit: str) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(), metadata=[("x-limit", limit)], timeout=10)
        except grpc.RpcError as error:
            return error.code()
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        return grpc.StatusCode.OK


@pytest.mark.parametrize("limit", ["global", "local"])
def test_a_grpc_call_over_the_limit_ends_resource_exhausted(edge_port: int, limit: str) -> None:
    assert health_check(edge_port, limit) == grpc.StatusCode.OK
    assert health_check(edge_port, limit) == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The same route refusing a plain HTTP request: problem details, not a grpc-status.
    connection = http.client.HTTPConnection("127.0.0.1", edge_port, timeout=5)
    try:
        connection.request("POST", "/grpc.health.v1.Health/Check", headers={"x-limit": limit})
        response = connection.getresponse()
        assert response.status == 429 and response.getheader("content-type") == "application/problem+json"
        assert json.loads(response.read())["title"] == "Too Many Requests"
    finally:
        connection.close()
