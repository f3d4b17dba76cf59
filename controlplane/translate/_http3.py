"""A listener's `tls.http3` → a second Envoy Listener, `<listener>-h3`, on the same port over UDP (QUIC), and
the `alt-svc` header the TCP listener's responses carry so clients find it.

The UDP listener's HTTP connection manager is the TCP one's (same filters, same RDS name, so the same
routes) with the HTTP/3 codec; its QUIC transport wraps the TCP listener's DownstreamTlsContext, so the
same SDS certificate Secret (per region with `tls.regions`) is served over both.
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, base_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2, quic_config_pb2, udp_listener_config_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.quic.v3 import quic_transport_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from controlplane.config.listener_tls import http3_twin
from controlplane.config.model import Listener
from controlplane.translate._protos import header_setting_filter, packed, socket_address

__all__ = ["ALT_SVC_FILTER", "QUIC_TRANSPORT_SOCKET", "alt_svc_filters", "alt_svc_value", "http3_listeners",
           "serves_http3"]

QUIC_TRANSPORT_SOCKET = "envoy.transport_sockets.quic"
ALT_SVC_FILTER = "pavilion.alt_svc"  # an envoy.filters.http.header_mutation; its own name, as pavilion.external_address
ALT_SVC_MAX_AGE = 86400  # a day, as most sites advertise it: a client re-learns after a change within that

_HCM = hcm_pb2.HttpConnectionManager


def serves_http3(item: Listener) -> bool:
    return item.tls is not None and item.tls.http3 and item.https_port is None


def alt_svc_value(item: Listener) -> str:
    return f'h3=":{item.port}"; ma={ALT_SVC_MAX_AGE}'


def alt_svc_filters(item: Listener) -> list[hcm_pb2.HttpFilter]:
    """On the TCP listener of an `http3` listener: a filter adding `alt-svc` to every response; else none."""
    if not serves_http3(item):
        return []
    return [header_setting_filter(ALT_SVC_FILTER, "alt-svc", alt_svc_value(item), on_response=True)]


def http3_listeners(item: Listener, tcp: listener_pb2.Listener) -> list[listener_pb2.Listener]:
    """With `tls.http3`, the UDP twin of `tcp` (the listener `item` translated): its connection manager with the
    HTTP/3 codec and without the alt-svc filter, its TLS context inside a QUIC transport. Otherwise none."""
    if not serves_http3(item):
        return []
    (tcp_chain,) = tcp.filter_chains
    manager = _HCM()
    tcp_chain.filters[0].typed_config.Unpack(manager)
    manager.codec_type = _HCM.HTTP3
    # Extended CONNECT (websockets, RFC 9220) over HTTP/3 where the TCP listener allows it over HTTP/2 (_websocket).
    extended_connect = manager.http2_protocol_options.allow_connect
    manager.ClearField("http2_protocol_options")
    manager.http3_protocol_options.CopyFrom(protocol_pb2.Http3ProtocolOptions(allow_extended_connect=extended_connect))
    kept = [f for f in manager.http_filters if f.name != ALT_SVC_FILTER]
    del manager.http_filters[:]
    manager.http_filters.extend(kept)
    context = tls_pb2.DownstreamTlsContext()
    tcp_chain.transport_socket.typed_config.Unpack(context)
    # QUIC negotiates `h3` itself; the TCP listener's h2/http1.1 mean nothing here.
    del context.common_tls_context.alpn_protocols[:]
    quic = quic_transport_pb2.QuicDownstreamTransport(downstream_tls_context=context)
    address = socket_address(item.address, item.port)
    address.socket_address.protocol = address_pb2.SocketAddress.UDP
    return [listener_pb2.Listener(
        name=http3_twin(item.name),
        address=address,
        udp_listener_config=udp_listener_config_pb2.UdpListenerConfig(
            quic_options=quic_config_pb2.QuicProtocolOptions()),
        filter_chains=[listener_components_pb2.FilterChain(
            filters=[listener_components_pb2.Filter(name=tcp_chain.filters[0].name, typed_config=packed(manager))],
            transport_socket=base_pb2.TransportSocket(name=QUIC_TRANSPORT_SOCKET, typed_config=packed(quic)),
        )],
    )]
