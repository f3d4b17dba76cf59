"""Static Envoy bootstraps for tests and benches that run one Pavilion service behind Envoy without the
control plane: one loopback listener with an HTTP filter chain, static clusters, admin on loopback."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message


def packed(message: Message) -> any_pb2.Any:
    result = any_pb2.Any()
    result.Pack(message)
    return result


def loopback(port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port))


def static_cluster(name: str, ports: Sequence[int], *, http2: bool, max_streams: int = 0) -> cluster_pb2.Cluster:
    """Round robin over loopback `ports`; `http2` for gRPC services."""
    cluster = cluster_pb2.Cluster(
        name=name, type=cluster_pb2.Cluster.STATIC, connect_timeout=duration_pb2.Duration(seconds=1),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        load_assignment=endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[
                endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(address=loopback(p)))
                for p in ports])]))
    if http2:
        options = http_protocol_options_pb2.HttpProtocolOptions(
            explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()))
        if max_streams:
            # Few streams per connection make Envoy open several, so SO_REUSEPORT workers all get some.
            options.explicit_http_config.http2_protocol_options.max_concurrent_streams.value = max_streams
        cluster.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Pack(options)
    return cluster


def ingress_bootstrap(listen_port: int, admin_port: int, *, routes: Sequence[route_components_pb2.Route],
                      filters: Sequence[hcm_pb2.HttpFilter],
                      clusters: Sequence[cluster_pb2.Cluster]) -> bootstrap_pb2.Bootstrap:
    """One listener named `ingress` whose HTTP filters are `filters` then the router, over `routes`."""
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix="ingress", codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        route_config=route_pb2.RouteConfiguration(name="local", virtual_hosts=[
            route_components_pb2.VirtualHost(name="all", domains=["*"], routes=list(routes))]),
        http_filters=[*filters,
                      hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=packed(router_pb2.Router()))])
    listener = listener_pb2.Listener(
        name="ingress", address=loopback(listen_port),
        filter_chains=[listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
            name="envoy.filters.network.http_connection_manager", typed_config=packed(manager))])])
    return bootstrap_pb2.Bootstrap(
        admin=bootstrap_pb2.Admin(address=loopback(admin_port)),
        static_resources=bootstrap_pb2.Bootstrap.StaticResources(listeners=[listener], clusters=list(clusters)))
