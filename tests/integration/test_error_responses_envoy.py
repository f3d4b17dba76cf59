"""`error_responses: {format: problem_json}` through the real control plane, Envoy, `pavilion extauthz` and
`pavilion ratelimit`: Envoy's own errors (no route, an unreachable service, ext_authz's 401, a local and a
global 429) come as RFC 9457 problem details with Envoy's request id, their headers kept; a route's
`direct_response` and `redirect` keep the status and body the platform chose; a HEAD has no body; a gRPC
call refused by Envoy still ends with a proper grpc-status."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controlplane.config.load import load_config
from controlplane.envoy_check import check_with_envoy
from tests.extauthz.issuer import Issuer
from tests.integration.gateway_procs import running_gateway, start_upstreams, start_xds_service
from tests.procs import ENVOY, Proc, free_port

pytestmark = pytest.mark.integration

ACME = Issuer(algs=("ES256",))
PROBLEM = "application/problem+json"

CONFIG = """regions: [eu-west]
listeners: [{{name: edge, address: 127.0.0.1, port: {edge}}}]
error_responses: {{format: problem_json}}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:{accounts}, region: eu-west}}]
  - name: gone
    endpoints: [{{address: 127.0.0.1:{closed}, region: eu-west}}]
  - name: gone-grpc
    protocol: grpc
    endpoints: [{{address: 127.0.0.1:{closed}, region: eu-west}}]
  - name: extauthz
    protocol: grpc
    endpoints: [{{address: 127.0.0.1:{extauthz}, region: eu-west}}]
  - name: ratelimit
    protocol: grpc
    endpoints: [{{address: 127.0.0.1:{ratelimit}, region: eu-west}}]
extauthz: {{service: extauthz, timeout: 2s}}
ratelimit: {{service: ratelimit, timeout: 2s}}
tenants:
  - id: acme
    issuer: {issuer}
    audiences: [{audience}]
    algorithms: [ES256]
    jwks: {{inline: {jwks}}}
routes:
  - {{name: guarded, match: {{prefix: /v1/guarded}}, service: accounts}}
  - {{name: closed, match: {{prefix: /v1/closed}}, service: gone, auth: none}}
  - name: local
    match: {{prefix: /v1/local}}
    service: accounts
    auth: none
    local_rate_limit: {{unit: hour, requests: 1}}
  - name: global
    match: {{prefix: /v1/global}}
    service: accounts
    auth: none
    rate_limits: [{{unit: hour, requests: 1}}]
  - name: maintenance
    match: {{prefix: /v1/maintenance}}
    auth: none
    direct_response: {{status: 503, body: "down for maintenance"}}
  - name: moved
    match: {{prefix: /v1/moved}}
    auth: none
    redirect: {{host: new.example.com}}
  - name: grpc-closed
    match: {{path: /grpc.health.v1.Health/Check}}
    service: gone-grpc
    auth: none
"""


@dataclass
class Stack:
    port: int
    extauthz: Proc


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    routes = tmp_path_factory.mktemp("routes")
    edge_port, closed, extauthz_port, ratelimit_port = free_port(), free_port(), free_port(), free_port()
    upstreams = start_upstreams({"accounts": "eu-west"})
    (routes / "gateway.yaml").write_text(CONFIG.format(
        edge=edge_port, accounts=upstreams["accounts"][1], closed=closed, extauthz=extauthz_port,
        ratelimit=ratelimit_port, issuer=ACME.issuer, audience=ACME.audience, jwks=json.dumps(ACME.jwks())))
    assert check_with_envoy(load_config(routes), ENVOY) == []
    with running_gateway(routes, edge_port, upstreams) as gateway:
        extauthz = start_xds_service("extauthz", gateway.plane, extauthz_port, "extauthz-local")
        try:
            ratelimit = start_xds_service("ratelimit", gateway.plane, ratelimit_port, "ratelimit-local")
        except BaseException:
            extauthz.stop()
            raise
        try:
            _wait_for_tenants(edge_port)
            yield Stack(edge_port, extauthz)
        finally:
            ratelimit.stop()
            extauthz.stop()


def _wait_for_tenants(port: int, timeout: float = 20.0) -> None:
    """ext_authz takes its tenants over xDS after starting: wait until a good token passes."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = send(port, "/v1/guarded", headers={"authorization": f"Bearer {ACME.token('ES256')}"})
        if status == 200 or time.monotonic() > deadline:
            assert status == 200, body
            return
        time.sleep(0.1)


@pytest.fixture
def edge(stack: Stack) -> int:
    return stack.port


def send(port: int, path: str, *, method: str = "GET",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def problem(port: int, path: str, status: int, **kwargs: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The problem details of a request answered `status`, checked for the members every one has."""
    got, headers, raw = send(port, path, **kwargs)
    assert got == status, raw
    assert headers["content-type"] == PROBLEM, (headers, raw)
    body = json.loads(raw)
    assert body["type"] == "about:blank" and body["status"] == status
    # The request id support finds the access log line by, the same Envoy hands back in x-request-id.
    assert body["request_id"] and body["request_id"] == headers["x-request-id"]
    return body, headers


def test_no_route_is_a_404_problem_saying_so(edge: int) -> None:
    body, _ = problem(edge, "/nowhere", 404)
    assert body["title"] == "Not Found" and body["detail"] == "no route matches the request's host and path"


def test_an_unreachable_service_is_a_503_problem_with_envoys_words(edge: int) -> None:
    body, _ = problem(edge, "/v1/closed", 503)
    assert body["title"] == "Service Unavailable"
    assert body["detail"].startswith("upstream connect error")


def test_ext_authz_refusal_keeps_its_challenge_and_gives_its_reason(edge: int) -> None:
    body, headers = problem(edge, "/v1/guarded", 401)
    assert body["title"] == "Unauthorized" and body["detail"] == "missing"
    assert headers["www-authenticate"] == "Bearer"
    assert headers["cache-control"] == "no-store"
    body, headers = problem(edge, "/v1/guarded", 401, headers={"authorization": "Bearer not-a-jwt"})
    assert headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert "not-a-jwt" not in json.dumps(body)  # the token never comes back


def test_local_and_global_rate_limits_are_429_problems_keeping_their_headers(edge: int) -> None:
    assert send(edge, "/v1/local")[0] == 200
    body, headers = problem(edge, "/v1/local", 429)
    assert body["title"] == "Too Many Requests"
    assert {"retry-after", "ratelimit", "ratelimit-policy"} <= headers.keys(), headers
    assert send(edge, "/v1/global")[0] == 200
    body, headers = problem(edge, "/v1/global", 429)
    assert body["title"] == "Too Many Requests"
    assert {"retry-after", "ratelimit", "ratelimit-policy"} <= headers.keys(), headers


def test_direct_responses_and_redirects_are_left_as_configured(edge: int) -> None:
    problem(edge, "/v1/closed", 503)  # the same status from Envoy is rewritten...
    status, headers, raw = send(edge, "/v1/maintenance")  # ...the platform's own 503 is not
    assert (status, raw) == (503, b"down for maintenance")
    assert headers["content-type"] == "text/plain"
    status, headers, raw = send(edge, "/v1/moved")
    assert status == 301 and headers["location"] == "http://new.example.com/v1/moved"
    assert raw == b"" and "content-type" not in headers


def test_a_head_request_gets_the_problem_headers_and_no_body(edge: int) -> None:
    status, headers, raw = send(edge, "/v1/closed", method="HEAD")
    assert status == 503 and headers["content-type"] == PROBLEM
    assert raw == b""


def test_a_grpc_call_refused_by_envoy_still_ends_with_a_grpc_status(edge: int) -> None:
    problem(edge, "/grpc.health.v1.Health/Check", 503, method="POST")  # plain HTTP: a problem...
    # ...a gRPC call: Envoy's trailers-only answer, its grpc-message Envoy's text, not a JSON document.
    with grpc.insecure_channel(f"127.0.0.1:{edge}") as channel, pytest.raises(grpc.RpcError) as caught:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details().startswith("upstream connect error"), error.details()


def test_ext_authz_down_is_a_503_problem_without_detail(stack: Stack) -> None:
    """Last: it stops ext_authz. Envoy's own 503 (status_on_error) has no reason to give: `detail` is left out."""
    stack.extauthz.stop()
    body, headers = problem(stack.port, "/v1/guarded", 503, headers={"authorization": f"Bearer {ACME.token('ES256')}"})
    assert body["title"] == "Service Unavailable" and "detail" not in body
    assert "www-authenticate" not in headers
