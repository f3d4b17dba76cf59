"""A route's `fault` through the real control plane, Envoy and `pavilion extauthz`: a 100 % abort answers its
status and the service never sees the request, though a caller without a token still gets ext_authz's
401 first; a header-gated fault hits only requests with the header; a 50 % abort lands on about half;
a delay holds a request at least that long; a gRPC abort answers its grpc-status; the access log
marks faulted requests; the `x-envoy-fault-*` headers a client sends do nothing, and a client-named
downstream cluster gets no counters of its own; a config without a route's fault goes live in the
running Envoy; `envoy --mode validate` accepts the translated config."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controlplane.config.load import load_config
from controlplane.envoy_check import check_with_envoy
from tests.extauthz.issuer import Issuer
from tests.integration.gateway_procs import Gateway, Reply, running_gateway, start_xds_service
from tests.integration.gateway_procs import request as http_request
from tests.integration.recording_upstream import seen, start_recording_upstream
from tests.integration.test_mirror_envoy import wait_for
from tests.procs import ENVOY, free_port

pytestmark = pytest.mark.integration

ACME = Issuer(algs=("ES256",))

CONFIG = """regions: [eu-west]
listeners:
  - {{name: public, address: 127.0.0.1, port: {port}}}
  # Behind a load balancer: Envoy then keeps the client's x-envoy-* headers (no edge request).
  - {{name: behind, address: 127.0.0.1, port: {behind}, client_address: {{trusted_cidrs: [10.0.0.0/8]}}}}
services:
  - name: api
    endpoints: [{{address: 127.0.0.1:{api}, region: eu-west}}]
  - name: extauthz
    protocol: grpc
    endpoints: [{{address: 127.0.0.1:{extauthz}, region: eu-west}}]
  - name: health
    protocol: grpc
    endpoints: [{{address: 127.0.0.1:{extauthz}, region: eu-west}}]
extauthz: {{service: extauthz, timeout: 2s}}
tenants:
  - id: acme
    issuer: {issuer}
    audiences: [{audience}]
    algorithms: [ES256]
    jwks: {{inline: {jwks}}}
routes:
  - {{name: down, listener: public, match: {{prefix: /v1/down}}, service: api,
     fault: {{abort: {{status: 503, percent: 100}}}}}}
  - name: gated
    listener: public
    match: {{prefix: /v1/gated}}
    service: api
    auth: none
    fault: {{abort: {{status: 418, percent: 100}}, only_with_header: x-chaos-test}}
  - {{name: half, listener: public, match: {{prefix: /v1/half}}, service: api, auth: none,
     fault: {{abort: {{status: 500, percent: 50}}}}}}
  - {{name: slow, listener: public, match: {{prefix: /v1/slow}}, service: api, auth: none,
     fault: {{delay: {{duration: 200ms, percent: 100}}}}}}
  - {{name: plain, listener: public, match: {{prefix: /v1/plain}}, service: api, auth: none}}
  - {{name: orders, listener: public, match: {{prefix: /v1/orders}}, service: api}}
  - {{name: health, listener: public, match: {{prefix: /grpc.health.v1.Health/}}, service: health, auth: none,
     fault: {{abort: {{grpc_status: 9, percent: 100}}}}}}
  - {{name: behind, listener: behind, match: {{prefix: /}}, service: api, auth: none,
     fault: {{abort: {{status: 418, percent: 100}}, only_with_header: x-chaos-test}}}}
"""
DRILL = """  - {name: drill, listener: public, match: {prefix: /v1/drill}, service: api, auth: none,
     fault: {abort: {status: 503, percent: 100}}}
"""
DRILL_OVER = "  - {name: drill, listener: public, match: {prefix: /v1/drill}, service: api, auth: none}\n"
# Every header of Envoy's fault filter a client could send to ask for a fault of its own.
CLIENT_FAULT_HEADERS = {
    "x-envoy-fault-abort-request": "503", "x-envoy-fault-abort-request-percentage": "100",
    "x-envoy-fault-abort-grpc-request": "14", "x-envoy-fault-delay-request": "2000",
    "x-envoy-fault-delay-request-percentage": "100", "x-envoy-fault-throughput-response": "1",
    "x-envoy-fault-throughput-response-percentage": "100",
}


@dataclass
class Stack:
    gateway: Gateway
    api: int
    routes: Path
    behind: int  # the port of the listener behind a load balancer

    def send(self, path: str, *, token: bool = False, headers: dict[str, str] | None = None) -> Reply:
        sent = dict(headers or {})
        if token:
            sent["authorization"] = f"Bearer {ACME.token('ES256')}"
        return http_request(self.gateway.url(path), headers=sent)

    def reached(self, prefix: str) -> list[str]:
        """The paths under `prefix` the service got."""
        return [str(item["path"]) for item in seen(self.api) if str(item["path"]).startswith(prefix)]

    def fault_stats(self, listener: str = "public") -> dict[str, int]:
        """The listener's fault counters in the (one) Envoy, by name after `http.<listener>.fault.`."""
        admin = self.gateway.envoys[0].admin_port
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?filter=fault", timeout=5) as response:
            lines = response.read().decode().splitlines()
        prefix = f"http.{listener}.fault."
        return {name.removeprefix(prefix): int(value) for name, _, value in (line.partition(": ") for line in lines)
                if name.startswith(prefix) and value.strip().isdigit()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    routes = tmp_path_factory.mktemp("routes")
    port, behind, extauthz_port = free_port(), free_port(), free_port()
    upstream = start_recording_upstream("api")
    (routes / "gateway.yaml").write_text(CONFIG.format(
        port=port, behind=behind, api=upstream[1], extauthz=extauthz_port, issuer=ACME.issuer, audience=ACME.audience,
        jwks=json.dumps(ACME.jwks())) + DRILL)
    with running_gateway(routes, port, {"api": upstream}) as gateway:
        extauthz = start_xds_service("extauthz", gateway.plane, extauthz_port, "extauthz-faults")
        try:
            gateway.envoys[0].proc.wait_port(behind)
            result = Stack(gateway, upstream[1], routes, behind)
            # ext_authz takes its tenants over xDS after starting: wait for the first 200 with a token.
            wait_for(lambda: result.send("/v1/orders/warm-up", token=True).status == 200, "a token accepted", 20)
            yield result
        finally:
            extauthz.stop()


def test_envoy_validates_the_translated_config(stack: Stack) -> None:
    assert check_with_envoy(load_config(stack.routes), ENVOY) == []


def test_a_full_abort_answers_its_status_and_the_service_never_sees_it(stack: Stack) -> None:
    reply = stack.send("/v1/down/orders", token=True)
    assert reply.status == 503 and reply.body == {"text": "fault filter abort"}
    # The fault sits after ext_authz: a caller without a token is refused as ever, not faulted.
    assert stack.send("/v1/down/orders").status == 401
    assert stack.send("/v1/plain/orders").status == 200
    assert stack.reached("/v1/down") == [] and stack.reached("/v1/plain/orders") == ["/v1/plain/orders"]


def test_a_grpc_abort_answers_its_grpc_status(stack: Stack) -> None:
    """`pavilion extauthz` behind the route would answer a health check; the fault answers FAILED_PRECONDITION
    (9), which nothing else in the stack sends."""
    with grpc.insecure_channel(f"127.0.0.1:{stack.gateway.listen_port}") as channel, \
            pytest.raises(grpc.RpcError) as caught:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_header_gated_fault_hits_only_requests_with_the_header(stack: Stack) -> None:
    assert stack.send("/v1/gated/mine", headers={"x-chaos-test": "1"}).status == 418
    assert stack.send("/v1/gated/theirs").status == 200
    assert stack.reached("/v1/gated") == ["/v1/gated/theirs"]


def test_a_half_abort_lands_on_about_half_the_requests(stack: Stack) -> None:
    statuses = [stack.send(f"/v1/half/{n}").status for n in range(100)]
    aborted = statuses.count(500)
    assert 10 <= aborted <= 90 and statuses.count(200) == 100 - aborted, statuses
    assert len(stack.reached("/v1/half/")) == 100 - aborted


def test_a_delay_holds_the_request_at_least_that_long(stack: Stack) -> None:
    started = time.monotonic()
    assert stack.send("/v1/slow/wait").status == 200
    # A lower bound, the delay less Envoy's timer slack (its timers count from the event loop's cached time,
    # which may lag a few milliseconds): the delay happened. Not a figure of how fast the rest was.
    assert time.monotonic() - started >= 0.18
    assert stack.reached("/v1/slow") == ["/v1/slow/wait"]


def logged(stack: Stack, reply: Reply, timeout: float = 10.0) -> dict[str, Any]:
    """The access log line (JSON on Envoy's stdout, written buffered) of the request `reply` answers."""
    request_id = reply.headers["x-request-id"]

    def line() -> dict[str, Any] | None:
        for text in stack.gateway.envoys[0].proc.output().splitlines():
            entry = json.loads(text) if text.startswith("{") else {}
            if entry.get("request_id") == request_id:
                return dict(entry)
        return None

    found: dict[str, Any] = wait_for(line, f"the log line of {request_id}", timeout)
    return found


def test_the_access_log_marks_a_faulted_request(stack: Stack) -> None:
    """Envoy's response flags say which answers the fault made: FI an abort, DI a delay."""
    aborted = logged(stack, stack.send("/v1/gated/logged", headers={"x-chaos-test": "1"}))
    assert (aborted["status"], aborted["response_flags"], aborted["details"]) == (418, "FI", "fault_filter_abort")
    delayed = logged(stack, stack.send("/v1/slow/logged"))
    assert (delayed["status"], delayed["response_flags"]) == (200, "DI")
    assert logged(stack, stack.send("/v1/plain/logged"))["response_flags"] == "-"


def test_fault_headers_a_client_sends_do_nothing(stack: Stack) -> None:
    before = stack.fault_stats()
    for path in ("/v1/plain/asks", "/v1/gated/asks", "/v1/slow/asks", "/v1/half/asks"):
        headers = dict(CLIENT_FAULT_HEADERS)
        if path.startswith("/v1/slow") or path.startswith("/v1/half"):
            # Routes with a fault of their own: it stays the route's, whatever the client asks.
            reply = stack.send(path, headers=headers)
            assert reply.status in ((200,) if path.startswith("/v1/slow") else (200, 500)), path
        else:
            assert stack.send(path, headers=headers).status == 200, path
    # The gated route's own fault, asked for with the gate: its status, not the one the client names.
    assert stack.send("/v1/gated/gate", headers={**CLIENT_FAULT_HEADERS, "x-chaos-test": "1"}).status == 418
    after = stack.fault_stats()
    # One delay (the slow route's own 200 ms, not the client's 2 s) and the gate's abort, plus the half
    # route's own draw: nothing the headers asked for on the other routes.
    half_aborted = 1 if stack.reached("/v1/half/asks") == [] else 0
    assert after["delays_injected"] - before["delays_injected"] == 1
    assert after["aborts_injected"] - before["aborts_injected"] == 1 + half_aborted
    assert after.get("response_rl_injected", 0) == before.get("response_rl_injected", 0)
    assert stack.reached("/v1/plain/asks") == ["/v1/plain/asks"]
    assert stack.reached("/v1/gated/asks") == ["/v1/gated/asks"]


def test_a_downstream_cluster_a_client_names_gets_no_counters(stack: Stack) -> None:
    """Behind a load balancer Envoy passes a client's x-envoy-downstream-service-cluster to the fault filter,
    which would keep counters named after it for every name a client makes up."""
    reply = http_request(f"http://127.0.0.1:{stack.behind}/named", headers={
        "x-chaos-test": "1", "x-envoy-downstream-service-cluster": "made-up"})
    assert reply.status == 418
    assert stack.fault_stats("behind")["aborts_injected"] >= 1
    assert not [name for name in stack.fault_stats("behind") if "made-up" in name]


def test_a_config_without_the_fault_goes_live_in_the_running_envoy(stack: Stack) -> None:
    assert stack.send("/v1/drill/before").status == 503
    envoy = stack.gateway.envoys[0].proc
    config = stack.routes / "gateway.yaml"
    config.write_text(config.read_text().replace(DRILL, DRILL_OVER))
    stack.gateway.plane.wait_current(1)
    assert wait_for(lambda: stack.send("/v1/drill/after").status == 200, "the drill route unfaulted", 20)
    assert envoy.alive()
    assert stack.reached("/v1/drill") == ["/v1/drill/after"]
