"""Tracing through the real Envoy: with `tracing:` the control plane gives every connection manager
Envoy's OpenTelemetry tracer, and a request leaves a span, tagged with its route, status and tenant,
at a fake OTLP collector (a grpc.aio TraceService/Export server); the upstream gets a `traceparent`;
the request's query (an OAuth code, state, an email) is in no attribute of any span."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from controlplane.config.model import Tracing
from controlplane.envoy_check import check_with_envoy
from tests.controlplane.translate.sample import sample_config
from tests.extauthz.issuer import Issuer
from tests.integration.gateway_procs import Gateway, Reply, running_gateway, start_upstreams, start_xds_service
from tests.procs import ENVOY, free_port

pytestmark = pytest.mark.integration

ACME = Issuer(algs=("ES256",))
SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"

CONFIG = """regions: [eu-west]
listeners:
  - {{name: public, address: 127.0.0.1, port: {port}}}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:{accounts}, region: eu-west}}]
  - name: extauthz
    protocol: grpc
    endpoints: [{{address: 127.0.0.1:{extauthz}, region: eu-west}}]
  - name: otel
    protocol: grpc
    endpoints: [{{address: 127.0.0.1:{collector}, region: eu-west}}]
extauthz: {{service: extauthz, timeout: 2s}}
tracing: {{service: otel, sampling: 100%, service_name: edge-under-test}}
tenants:
  - id: acme
    issuer: {issuer}
    audiences: [{audience}]
    algorithms: [ES256]
    jwks: {{inline: {jwks}}}
routes:
  - {{name: accounts-api, match: {{prefix: /accounts}}, service: accounts}}
"""


@dataclass
class Collector:
    """Spans received, with the resource's service.name of each."""

    port: int
    spans: list[tuple[str, trace_pb2.Span]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[tuple[str, trace_pb2.Span]]:
        with self.lock:
            return list(self.spans)

    async def export(self, request: trace_service_pb2.ExportTraceServiceRequest,
                     _context: grpc.aio.ServicerContext[Any, Any]) -> trace_service_pb2.ExportTraceServiceResponse:
        with self.lock:
            for resource_spans in request.resource_spans:
                names = [a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"]
                # xds-protos ships an early OTLP whose field 2 is `instrumentation_library_spans`; Envoy sends
                # `scope_spans` there, the same shape (spans in field 2), so either name reads it.
                scopes = getattr(resource_spans, "scope_spans", None) or resource_spans.instrumentation_library_spans
                for scope in scopes:
                    self.spans.extend((names[0] if names else "", span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@contextmanager
def running_collector() -> Iterator[Collector]:
    """The fake collector on a random port, its grpc.aio server in a thread of its own, always stopped."""
    collector = Collector(free_port())
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stopping: list[asyncio.Event] = []

    async def serve() -> None:
        stopping.append(asyncio.Event())
        aio = grpc.aio.server()
        aio.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            "Export": grpc.unary_unary_rpc_method_handler(
                collector.export, request_deserializer=trace_service_pb2.ExportTraceServiceRequest.FromString,
                response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString)}),))
        aio.add_insecure_port(f"127.0.0.1:{collector.port}")
        await aio.start()
        started.set()
        await stopping[0].wait()
        await aio.stop(None)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        assert started.wait(10), "the fake collector did not start"
        yield collector
    finally:
        if stopping:
            loop.call_soon_threadsafe(stopping[0].set)
        thread.join(10)
        if not thread.is_alive():
            loop.close()


def test_envoy_accepts_the_tracing_config() -> None:
    config = sample_config()
    tracing = Tracing(service=config.services[0].name, sampling=0.5)
    assert check_with_envoy(replace(config, tracing=tracing), ENVOY) == []


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Collector]]:
    routes = tmp_path_factory.mktemp("routes")
    port, extauthz_port = free_port(), free_port()
    with running_collector() as collector:
        upstreams = start_upstreams({"accounts": "eu-west"})
        (routes / "gateway.yaml").write_text(CONFIG.format(
            port=port, accounts=upstreams["accounts"][1], extauthz=extauthz_port, collector=collector.port,
            issuer=ACME.issuer, audience=ACME.audience, jwks=json.dumps(ACME.jwks())))
        with running_gateway(routes, port, upstreams) as gateway:
            extauthz = start_xds_service("extauthz", gateway.plane, extauthz_port, "extauthz-test")
            try:
                yield gateway, collector
            finally:
                extauthz.stop()


def eventually(gateway: Gateway, path: str, headers: dict[str, str], status: int, timeout: float = 20.0) -> Reply:
    deadline = time.monotonic() + timeout
    while True:
        reply = gateway.get(path, headers=headers)
        if reply.status == status or time.monotonic() > deadline:
            assert reply.status == status, reply.body
            return reply
        time.sleep(0.1)


def attributes(span: trace_pb2.Span) -> dict[str, str]:
    return {a.key: a.value.string_value for a in span.attributes}


def test_a_request_leaves_a_span_with_its_route_status_and_tenant(stack: tuple[Gateway, Collector]) -> None:
    gateway, collector = stack
    query = "code=secret-code&state=secret-state&login_hint=secret%40example.test"  # an OAuth redirect's
    reply = eventually(gateway, f"/accounts/7?{query}", {"authorization": f"Bearer {ACME.token('ES256')}"}, 200)
    traceparent = reply.body["headers"].get("Traceparent") or reply.body["headers"].get("traceparent")
    assert traceparent is not None, reply.body["headers"]
    trace_id = traceparent.split("-")[1]
    deadline = time.monotonic() + 20  # Envoy sends spans in batches, every few seconds
    while time.monotonic() < deadline:
        mine = [(name, span) for name, span in collector.received()
                if span.trace_id.hex() == trace_id and span.kind == trace_pb2.Span.SPAN_KIND_SERVER]
        if mine:
            break
        time.sleep(0.2)
    assert mine, f"no span of trace {trace_id}; got {len(collector.received())} spans"
    name, span = mine[0]
    tags = attributes(span)
    assert name == "edge-under-test"
    assert tags.get("pavilion.route") == "accounts-api", tags
    assert tags["pavilion.tenant"] == "acme"
    assert tags["http.status_code"] == "200"
    assert tags.get("upstream_cluster") == "accounts"
    # Envoy's own http.url keeps the query; the custom tag of that name replaces it, in place (one attribute).
    # (the authority as Envoy's own tag has it: this gateway strips the port from Host)
    assert re.fullmatch(r"http://127\.0\.0\.1(:\d+)?/accounts/7", tags["http.url"]), tags
    assert [a.key for a in span.attributes].count("http.url") == 1
    trace = [span for _name, span in collector.received() if span.trace_id.hex() == trace_id]
    for one in trace:  # the server span and the ext_authz call's client span alike
        leaked = {a.key: a.value for a in one.attributes if "secret" in str(a.value)}
        assert not leaked and "secret" not in one.name and "secret" not in str(list(one.events)), (one.name, leaked)


def test_a_denied_requests_span_has_no_query_either(stack: tuple[Gateway, Collector]) -> None:
    """ext_authz's local 401 ends the span on another path (no upstream): the same tags."""
    gateway, collector = stack
    eventually(gateway, "/accounts/8?code=secret-denied&state=secret-state", {}, 401)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        denied = [span for _name, span in collector.received() if attributes(span).get("http.status_code") == "401"
                  and span.kind == trace_pb2.Span.SPAN_KIND_SERVER]
        if denied:
            break
        time.sleep(0.2)
    assert denied, f"no span of the 401; got {len(collector.received())} spans"
    assert re.fullmatch(r"http://127\.0\.0\.1(:\d+)?/accounts/8", attributes(denied[0])["http.url"])
    leaked = [(span.name, a.key) for _name, span in collector.received() for a in span.attributes
              if "secret" in str(a.value)]
    assert not leaked
