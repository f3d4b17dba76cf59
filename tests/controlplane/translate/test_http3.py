"""`tls.http3`: a UDP twin `<listener>-h3` with the TCP listener's connection manager (HTTP/3 codec), its
certificate Secret inside a QUIC transport, and `alt-svc` on the TCP listener's responses only."""

from __future__ import annotations

from dataclasses import replace

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.quic.v3 import quic_transport_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from controlplane import resources as urls
from controlplane.config.model import Config, ExtAuthzSettings, ListenerTls, RegionCertificate
from controlplane.translate import resource_sources
from tests.controlplane.translate.sample import sample_config, translated

CHAIN = b"-----BEGIN CERTIFICATE-----\nleaf\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n"
_HCM = hcm_pb2.HttpConnectionManager


def with_http3(http3: bool = True, **tls: object) -> Config:
    config = sample_config()
    public = ListenerTls(CHAIN, KEY, http3=http3, **tls)  # type: ignore[arg-type]
    changed = tuple(replace(item, tls=public) if item.name == "public" else item for item in config.listeners)
    return replace(config, extauthz=ExtAuthzSettings("extauthz"), listeners=changed)


def listeners(config: Config, region: str = "eu-west") -> dict[str, listener_pb2.Listener]:
    return {m.name: m for m in translated(listener_pb2.Listener, config, region)}


def manager(found: listener_pb2.Listener) -> hcm_pb2.HttpConnectionManager:
    (chain,) = found.filter_chains
    unpacked = _HCM()
    assert chain.filters[0].typed_config.Unpack(unpacked)
    return unpacked


def quic_context(found: listener_pb2.Listener) -> tls_pb2.DownstreamTlsContext:
    (chain,) = found.filter_chains
    assert chain.transport_socket.name == "envoy.transport_sockets.quic"
    quic = quic_transport_pb2.QuicDownstreamTransport()
    assert chain.transport_socket.typed_config.Unpack(quic)
    return quic.downstream_tls_context


def test_http3_adds_a_udp_twin_on_the_same_port_with_quic_options() -> None:
    found = listeners(with_http3())
    tcp, udp = found["public"], found["public-h3"]
    assert udp.address.socket_address.protocol == address_pb2.SocketAddress.UDP
    assert tcp.address.socket_address.protocol == address_pb2.SocketAddress.TCP
    assert udp.address.socket_address.port_value == tcp.address.socket_address.port_value
    assert udp.address.socket_address.address == tcp.address.socket_address.address
    assert udp.udp_listener_config.HasField("quic_options")
    assert [m.name for m in translated(listener_pb2.Listener, with_http3(), "eu-west")] == sorted(found)


def test_without_http3_there_is_no_udp_listener_and_no_alt_svc() -> None:
    found = listeners(with_http3(False))
    assert not any(name.endswith("-h3") for name in found)
    assert "pavilion.alt_svc" not in [f.name for f in manager(found["public"]).http_filters]


def test_the_udp_listener_has_the_tcp_one_s_filters_and_routes_with_the_http3_codec() -> None:
    found = listeners(with_http3())
    tcp, udp = manager(found["public"]), manager(found["public-h3"])
    assert udp.codec_type == _HCM.HTTP3 and tcp.codec_type == _HCM.AUTO
    assert udp.rds.route_config_name == tcp.rds.route_config_name == "public"
    tcp_filters = [f for f in tcp.http_filters if f.name != "pavilion.alt_svc"]
    assert list(udp.http_filters) == tcp_filters
    assert "envoy.filters.http.ext_authz" in [f.name for f in udp.http_filters]
    # Everything else the same, so a later HCM setting reaches both without a second place to add it.
    for message in (tcp, udp):
        message.ClearField("http_filters")
        message.ClearField("codec_type")
        message.ClearField("http2_protocol_options")
        message.ClearField("http3_protocol_options")
    assert udp == tcp


def test_alt_svc_names_the_port_on_tcp_responses_first_in_the_chain() -> None:
    found = listeners(with_http3())
    first = manager(found["public"]).http_filters[0]
    assert first.name == "pavilion.alt_svc"
    mutation = header_mutation_pb2.HeaderMutation()
    assert first.typed_config.Unpack(mutation)
    (added,) = mutation.mutations.response_mutations
    port = found["public"].address.socket_address.port_value
    assert (added.append.header.key, added.append.header.value) == ("alt-svc", f'h3=":{port}"; ma=86400')


def test_quic_serves_the_tcp_listener_s_certificate_secret_without_tcp_alpn() -> None:
    config = with_http3(regions=(RegionCertificate("us-east", CHAIN, KEY),))
    for region in ("eu-west", "us-east"):
        found = listeners(config, region)
        context = quic_context(found["public-h3"])
        (tcp_chain,) = found["public"].filter_chains
        tcp_context = tls_pb2.DownstreamTlsContext()
        assert tcp_chain.transport_socket.typed_config.Unpack(tcp_context)
        assert list(context.common_tls_context.alpn_protocols) == []
        tcp_context.common_tls_context.ClearField("alpn_protocols")
        assert context == tcp_context
        assert [s.name for s in context.common_tls_context.tls_certificate_sds_secret_configs] == \
            ["public/certificate"]


def test_the_udp_listener_is_attributed_to_the_listener_entry() -> None:
    config = with_http3()
    sources = resource_sources(config)
    assert sources[(urls.LISTENER, "public-h3")] == config.listener("public").source
    assert (urls.LISTENER, "internal-h3") not in sources
