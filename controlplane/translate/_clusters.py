"""Services → Clusters (EDS over ADS) and ClusterLoadAssignments (priorities by region).

Failover between regions is Envoy's priority load balancing: a node's own region is priority 0,
every other region priority 1. When local hosts turn unhealthy (active health check) or are ejected
(outlier detection), priority 0's availability drops and its load spills to priority 1; when they
pass again the load comes back.

The panic threshold stays at Envoy's default (50 %) on purpose. It plays no part in failover: while
the other region can take the load, normalized availability is 100 % and Envoy ignores it. It only
acts when most hosts everywhere look dead, and then it sends traffic to all of them; with 0 instead,
a burst of 5xx from a service in every region (a bad deploy) would get every host ejected, and the
gateway would answer 503 for the whole ejection time even after the service recovered.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import http_pb2

from controlplane.config.model import Endpoint, Service
from controlplane.translate._balancing import LB_POLICIES
from controlplane.translate._protos import ads_config_source, duration, packed, socket_address, uint32
from controlplane.translate._tls import upstream_transport_socket

__all__ = ["cluster", "load_assignment"]

_HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

# Priority 0 only for the node's own region; all other regions share priority 1 and fail over together.
LOCAL_PRIORITY = 0
REMOTE_PRIORITY = 1


def cluster(service: Service) -> cluster_pb2.Cluster:
    """The Cluster named after `service`; its endpoints come separately over EDS (ADS)."""
    result = cluster_pb2.Cluster(
        name=service.name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads_config_source()),
        connect_timeout=duration(service.connect_timeout),
        lb_policy=LB_POLICIES[service.load_balancing],
        # Envoy's edge best practice, as on the listeners: bound what one upstream connection buffers.
        per_connection_buffer_limit_bytes=uint32(32 * 1024),
        common_lb_config=cluster_pb2.Cluster.CommonLbConfig(
            locality_weighted_lb_config=cluster_pb2.Cluster.CommonLbConfig.LocalityWeightedLbConfig(),
        ),
    )
    result.typed_extension_protocol_options[_HTTP_PROTOCOL_OPTIONS].CopyFrom(packed(_protocol_options(service)))
    socket = upstream_transport_socket(service)
    if socket is not None:  # health checks go over it too
        result.transport_socket.CopyFrom(socket)
    if service.circuit_breaker is not None:
        limits = service.circuit_breaker
        result.circuit_breakers.CopyFrom(circuit_breaker_pb2.CircuitBreakers(thresholds=[
            circuit_breaker_pb2.CircuitBreakers.Thresholds(
                priority=base_pb2.RoutingPriority.DEFAULT,
                max_connections=uint32(limits.max_connections),
                max_pending_requests=uint32(limits.max_pending_requests),
                max_requests=uint32(limits.max_requests),
                max_retries=uint32(limits.max_retries),
            )]))
    if service.outlier_detection is not None:
        outlier = service.outlier_detection
        result.outlier_detection.CopyFrom(outlier_detection_pb2.OutlierDetection(
            consecutive_5xx=uint32(outlier.consecutive_5xx),
            interval=duration(outlier.interval),
            base_ejection_time=duration(outlier.base_ejection_time),
            max_ejection_percent=uint32(outlier.max_ejection_percent),
        ))
    if service.health_check is not None:
        check = service.health_check
        result.health_checks.append(health_check_pb2.HealthCheck(
            timeout=duration(check.timeout),
            interval=duration(check.interval),
            # Without this a cluster that has seen no traffic is checked only every 60 s, so a
            # recovered local endpoint would wait up to a minute before traffic fails back.
            no_traffic_interval=duration(check.interval),
            unhealthy_threshold=uint32(check.unhealthy_threshold),
            healthy_threshold=uint32(check.healthy_threshold),
            http_health_check=health_check_pb2.HealthCheck.HttpHealthCheck(
                path=check.path,
                codec_client_type=http_pb2.CodecClientType.HTTP1 if service.protocol == "http1"
                else http_pb2.CodecClientType.HTTP2),
        ))
    return result


def _protocol_options(service: Service) -> http_protocol_options_pb2.HttpProtocolOptions:
    """HTTP/1.1 to the hosts, or HTTP/2 (prior knowledge) for `http2` and `grpc` services."""
    explicit = http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig
    if service.protocol == "http1":
        config = explicit(http_protocol_options=protocol_pb2.Http1ProtocolOptions())
    else:
        config = explicit(http2_protocol_options=protocol_pb2.Http2ProtocolOptions())
    return http_protocol_options_pb2.HttpProtocolOptions(explicit_http_config=config)


def load_assignment(service: Service, region: str) -> endpoint_pb2.ClusterLoadAssignment:
    """`service`'s endpoints as seen from a node in `region`: one locality per (priority, region).

    When the service has no endpoint in `region`, the remote regions become priority 0 so the
    priorities stay contiguous; the traffic they get is the same either way.
    """
    by_locality: dict[tuple[int, str], list[Endpoint]] = {}
    has_local = any(e.region == region for e in service.endpoints)
    for endpoint in service.endpoints:
        remote = REMOTE_PRIORITY if has_local else LOCAL_PRIORITY
        priority = LOCAL_PRIORITY if endpoint.region == region else remote
        by_locality.setdefault((priority, endpoint.region), []).append(endpoint)
    localities = []
    for (priority, locality_region), members in sorted(by_locality.items()):
        members = sorted(members, key=lambda e: (e.host, e.port, e.weight))
        localities.append(endpoint_components_pb2.LocalityLbEndpoints(
            locality=base_pb2.Locality(region=locality_region),
            priority=priority,
            load_balancing_weight=uint32(sum(e.weight for e in members)),
            lb_endpoints=[_lb_endpoint(e) for e in members],
        ))
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=service.name, endpoints=localities)


def _lb_endpoint(endpoint: Endpoint) -> endpoint_components_pb2.LbEndpoint:
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=socket_address(endpoint.host, endpoint.port)),
        load_balancing_weight=uint32(endpoint.weight),
    )

