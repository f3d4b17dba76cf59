"""`tracing:` → every HttpConnectionManager gets Envoy's OpenTelemetry tracer, exporting to the collector."""

from __future__ import annotations

from dataclasses import replace

from envoy.config.trace.v3 import opentelemetry_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.config.model import Tracing
from tests.controlplane.translate.sample import sample_config
from tests.controlplane.translate.test_access_log import managers


def test_without_tracing_no_manager_traces() -> None:
    assert not any(hcm.HasField("tracing") for hcm in managers(sample_config()))


def test_every_manager_sends_spans_to_the_collector_cluster() -> None:
    config = replace(sample_config(), tracing=Tracing("accounts", sampling=0.5, service_name="edge-eu"))
    found = managers(config)
    assert len(found) == len(config.listeners)
    for hcm in found:
        tracing: hcm_pb2.HttpConnectionManager.Tracing = hcm.tracing
        assert tracing.provider.name == "envoy.tracers.opentelemetry"
        otel = opentelemetry_pb2.OpenTelemetryConfig()
        assert tracing.provider.typed_config.Unpack(otel)
        assert otel.grpc_service.envoy_grpc.cluster_name == "accounts"
        assert otel.service_name == "edge-eu"
        assert tracing.random_sampling.value == 0.5
        assert tracing.HasField("client_sampling") and tracing.client_sampling.value == 0
        tags = {tag.tag: tag.value for tag in tracing.custom_tags}
        assert tags == {"pavilion.route": "%ROUTE_NAME%",
                        "pavilion.tenant": "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:tenant)%",
                        "http.url": "%REQ(X-FORWARDED-PROTO)%://%REQ(:AUTHORITY)%%PATH(NQ:ORIG_OR_PATH):256%"}
        assert not [tag for tag in tracing.custom_tags if tag.HasField("request_header")]
