"""`tracing:` → the HttpConnectionManager's `tracing` with Envoy's OpenTelemetry tracer, exporting
spans over gRPC (OTLP) to the collector's cluster.

Envoy already makes an x-request-id and propagates W3C `traceparent` to the upstream; each span is
tagged with the route's name and, on protected routes, the tenant ext_authz found (never the
subject).

Envoy's own `http.url` tag holds the query, which may carry OAuth `code=`/`state=`, an
`access_token=` or an email. Envoy (1.40) sets its standard tags first and the custom tags after
them, on the same span, and the OpenTelemetry span keeps one attribute per key (the last value set):
so a custom tag named `http.url`, made of the same parts as Envoy's (x-forwarded-proto, authority,
the original path before any rewrite, at most 256 characters) but with `PATH(NQ)`, takes its place.
tests/integration/test_tracing_envoy.py checks that no attribute of any span of a request with a
query carries it.
"""

from __future__ import annotations

from envoy.config.core.v3 import grpc_service_pb2
from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.tracing.v3 import custom_tag_pb2
from envoy.type.v3 import percent_pb2

from controlplane.config.model import Tracing
from controlplane.translate._policy import EXT_AUTHZ_FILTER
from controlplane.translate._protos import duration, packed

__all__ = ["OPENTELEMETRY_TRACER", "SPAN_TAGS", "URL_WITHOUT_QUERY", "tracing"]

OPENTELEMETRY_TRACER = "envoy.tracers.opentelemetry"
# Envoy's url without the query: PATH's NQ drops it; ORIG_OR_PATH and 256 are what Envoy's own tag uses
# (x-envoy-original-path before a rewrite, max_path_tag_length's default).
URL_WITHOUT_QUERY = "%REQ(X-FORWARDED-PROTO)%://%REQ(:AUTHORITY)%%PATH(NQ:ORIG_OR_PATH):256%"
SPAN_TAGS = (
    ("pavilion.route", "%ROUTE_NAME%"),
    ("pavilion.tenant", f"%DYNAMIC_METADATA({EXT_AUTHZ_FILTER}:tenant)%"),
    ("http.url", URL_WITHOUT_QUERY),  # replaces Envoy's own, which keeps the query
)


def tracing(settings: Tracing | None) -> hcm_pb2.HttpConnectionManager.Tracing | None:
    if settings is None:
        return None
    config = opentelemetry_pb2.OpenTelemetryConfig(
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=settings.service), timeout=duration(1)),
        service_name=settings.service_name,
    )
    return hcm_pb2.HttpConnectionManager.Tracing(
        provider=http_tracer_pb2.Tracing.Http(name=OPENTELEMETRY_TRACER, typed_config=packed(config)),
        random_sampling=percent_pb2.Percent(value=settings.sampling),
        # Envoy traces every request carrying x-client-trace-id by default: at the edge that lets any
        # client choose what the collector must take.
        client_sampling=percent_pb2.Percent(value=0),
        custom_tags=[custom_tag_pb2.CustomTag(tag=tag, value=value) for tag, value in SPAN_TAGS],
    )
