"""Listeners → Envoy Listeners with one HttpConnectionManager each, routes fetched over RDS (ADS).

The HTTP filter chain is built by `http_filters` alone: later filters (ext_authz, ratelimit) go in
front of the router there, and nowhere else.
"""

from __future__ import annotations

from envoy.config.core.v3 import protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.config.model import Config, Listener
from controlplane.translate._access_log import access_loggers
from controlplane.translate._client_address import address_detection, external_address_filters, listener_filters
from controlplane.translate._compression import compressor_filters
from controlplane.translate._cors import cors_filter
from controlplane.translate._error_responses import error_reply_settings
from controlplane.translate._faults import fault_filters
from controlplane.translate._http3 import alt_svc_filters, http3_listeners
from controlplane.translate._local_ratelimit import local_ratelimit_filters
from controlplane.translate._policy import ext_authz_filter, ratelimit_filter
from controlplane.translate._protos import ads_config_source, boolean, duration, packed, socket_address, uint32
from controlplane.translate._rbac import needs_rbac, rbac_filter
from controlplane.translate._request_body import buffer_filters
from controlplane.translate._tls import client_certificate_forwarding, transport_socket
from controlplane.translate._tracing import tracing
from controlplane.translate._websocket import extended_connect, listener_upgrades, serves_websockets

__all__ = ["EDGE", "HCM_FILTER", "connection_manager", "envoy_listeners", "http_filters", "listener"]

EDGE = "edge"
HCM_FILTER = "envoy.filters.network.http_connection_manager"
ROUTER_FILTER = "envoy.filters.http.router"
SERVER_NAME = "pavilion"

_HCM = hcm_pb2.HttpConnectionManager


def envoy_listeners(item: Listener, config: Config, role: str) -> list[listener_pb2.Listener]:
    """`item`'s Envoy Listeners: the TCP one, and with `tls.http3` its UDP (QUIC) twin `<name>-h3` (_http3)."""
    tcp = listener(item, config, role)
    return [tcp, *http3_listeners(item, tcp)]


def listener(item: Listener, config: Config, role: str) -> listener_pb2.Listener:
    """The Listener named after `item`; its RouteConfiguration has the same name."""
    manager = packed(connection_manager(item, config, role))
    return listener_pb2.Listener(
        name=item.name,
        address=socket_address(item.address, item.port),
        # The PROXY protocol reader, when the listener has one: before TLS and HTTP read a byte.
        listener_filters=listener_filters(item),
        # Envoy's edge best practice: bound what one connection may buffer.
        per_connection_buffer_limit_bytes=uint32(32 * 1024),
        filter_chains=[listener_components_pb2.FilterChain(
            filters=[listener_components_pb2.Filter(name=HCM_FILTER, typed_config=manager)],
            transport_socket=transport_socket(item),
        )],
    )


def connection_manager(item: Listener, config: Config, role: str) -> hcm_pb2.HttpConnectionManager:
    edge = role == EDGE
    return _HCM(
        stat_prefix=item.name,
        codec_type=_HCM.AUTO,
        rds=hcm_pb2.Rds(config_source=ads_config_source(), route_config_name=item.name),
        # `alt-svc` first, so refusals of the filters after it advertise HTTP/3 too (_http3).
        http_filters=[*alt_svc_filters(item), *http_filters(item, config, role)],
        # Upgrades off but where a route enables them (`websocket: true`).
        upgrade_configs=listener_upgrades(item, config),
        # At the edge the client's address is the TCP peer; X-Forwarded-For is trusted only as far as the
        # listener's `client_address` says (_client_address).
        **address_detection(item, edge),
        # Route matching and later authz see one spelling of a path (no path confusion).
        normalize_path=boolean(True),
        merge_slashes=True,
        path_with_escaped_slashes_action=_HCM.UNESCAPE_AND_REDIRECT,
        # `hosts: [api.example.com]` must match `Host: api.example.com:10080` too.
        strip_any_host_port=True,
        server_name=SERVER_NAME,
        server_header_transformation=_HCM.OVERWRITE,
        generate_request_id=boolean(True),
        preserve_external_request_id=not edge,
        always_set_request_id_in_response=True,
        common_http_protocol_options=protocol_pb2.HttpProtocolOptions(
            idle_timeout=duration(3600),
            headers_with_underscores_action=protocol_pb2.HttpProtocolOptions.REJECT_REQUEST,
        ),
        http2_protocol_options=protocol_pb2.Http2ProtocolOptions(
            max_concurrent_streams=uint32(100),
            initial_stream_window_size=uint32(64 * 1024),
            initial_connection_window_size=uint32(1024 * 1024),
            # Browsers' websockets over HTTP/2 (RFC 8441), where a route has `websocket` (_websocket).
            allow_connect=extended_connect(item, config),
        ),
        stream_idle_timeout=duration(300),
        request_headers_timeout=duration(10),
        access_log=access_loggers(item, config.access_log),
        tracing=tracing(config.tracing),
        # Envoy's own errors as problem+json when `error_responses` asks (_error_responses).
        **error_reply_settings(config.error_responses),
        **client_certificate_forwarding(item),
    )


def http_filters(item: Listener, config: Config, role: str) -> list[hcm_pb2.HttpFilter]:
    """The HTTP filters of `item`'s connection manager, in order: CORS (when a route of the listener has
    `cors`), Envoy's local rate limits (when the listener or a route of it has `local_rate_limit`), RBAC
    (when the listener or a route of it has `allow_networks`, or a route `auth.client_certificates`),
    ext_authz (when `extauthz:` is set),
    ratelimit (when `ratelimit:` is set), the fault filter (when a route of the listener has `fault`),
    the buffer filter (when a route of the listener has `max_request_body`), the compressors (when the
    listener has `compression`), and the router, always last. Which requests are checked and counted is
    decided per route (see _policy, _rbac, _local_ratelimit); a listener that verifies client
    certificates also hands each one to ext_authz, which checks certificate-bound tokens against it. A
    `redirect_to_https` listener only redirects: the router alone."""
    del role
    filters = []
    if item.https_port is not None:
        return [_router()]
    # Envoy's own x-envoy-external-address where the client comes from trusted_cidrs (_client_address).
    filters.extend(external_address_filters(item))
    # First, so a preflight is answered before ext_authz asks it for a token or ratelimit counts it.
    if any(r.cors is not None for r in config.routes if r.listener == item.name):
        filters.append(cors_filter())
    # Then Envoy's own token buckets: a request shed there costs no certificate check, token check or counter.
    filters.extend(local_ratelimit_filters(item, config))
    # Then the client certificate and network checks: a refused client costs no token check and no counter.
    if needs_rbac(item, config):
        filters.append(rbac_filter(item))
    if config.extauthz is not None:
        verifies_clients = item.tls is not None and item.tls.client_ca is not None
        filters.append(ext_authz_filter(config.extauthz, peer_certificate=verifies_clients,
                                        websocket=serves_websockets(item, config)))
    if config.ratelimit is not None:
        filters.append(ratelimit_filter(config.ratelimit))
    # On for routes with `fault` only, after the checks: a fault never hides a refusal above (_faults).
    filters.extend(fault_filters(item, config))
    # On for routes with `max_request_body` only: a request refused above never has its body held (_request_body).
    filters.extend(buffer_filters(item, config))
    # Last before the router: they compress what the router hands back, not the refusals above (_compression).
    filters.extend(compressor_filters(item))
    filters.append(_router())
    return filters


def _router() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=packed(router_pb2.Router()))

