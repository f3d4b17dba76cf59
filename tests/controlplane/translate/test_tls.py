"""A listener with `tls:` gets SDS secrets named after it and a DownstreamTlsContext that asks for them
over ADS; a plaintext listener gets neither."""

from __future__ import annotations

from dataclasses import replace

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2

from controlplane import resources as urls
from controlplane.config.model import Config, ExtAuthzSettings, ListenerTls
from controlplane.translate import resource_sources, translate
from pavilion.errors import Location
from tests.controlplane.translate.sample import REGIONS, sample_config, translated

CHAIN = b"-----BEGIN CERTIFICATE-----\nleaf\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n"
CA = b"-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n"


def with_tls(public: ListenerTls | None, internal: ListenerTls | None = None) -> Config:
    config = sample_config()
    tls = {"public": public, "internal": internal}
    return replace(config, listeners=tuple(replace(item, tls=tls[item.name]) for item in config.listeners))


def listener_named(config: Config, name: str, role: str = "edge") -> listener_pb2.Listener:
    (found,) = [m for m in translated(listener_pb2.Listener, config, "eu-west", role) if m.name == name]
    return found


def tls_context(config: Config, name: str) -> tls_pb2.DownstreamTlsContext:
    (chain,) = listener_named(config, name).filter_chains
    assert chain.transport_socket.name == "envoy.transport_sockets.tls"
    context = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.typed_config.Unpack(context)
    return context


def test_secrets_are_named_after_the_listener_sorted_in_every_region() -> None:
    config = with_tls(ListenerTls(CHAIN, KEY, CA, True), ListenerTls(CHAIN, KEY))
    for region in REGIONS:
        served = translated(secret_pb2.Secret, config, region)
        assert [s.name for s in served] == ["internal/certificate", "public/certificate", "public/client-ca"]
    certificate, ca = translated(secret_pb2.Secret, config, "eu-west")[1:]
    assert certificate.tls_certificate == common_pb2.TlsCertificate(
        certificate_chain={"inline_bytes": CHAIN}, private_key={"inline_bytes": KEY})
    assert ca.validation_context == common_pb2.CertificateValidationContext(trusted_ca={"inline_bytes": CA})


def test_tls_context_names_the_secrets_over_ads() -> None:
    context = tls_context(with_tls(ListenerTls(CHAIN, KEY, CA, True)), "public")
    common = context.common_tls_context
    (certificate,) = common.tls_certificate_sds_secret_configs
    assert certificate.name == "public/certificate"
    assert certificate.sds_config.HasField("ads") and certificate.sds_config.resource_api_version == 2  # V3
    assert common.validation_context_sds_secret_config.name == "public/client-ca"
    assert common.validation_context_sds_secret_config.sds_config == certificate.sds_config
    assert not common.tls_certificates and not common.HasField("validation_context")  # no inline key in LDS
    assert context.require_client_certificate.value is True
    assert list(common.alpn_protocols) == ["h2", "http/1.1"]
    assert common.tls_params.tls_minimum_protocol_version == common_pb2.TlsParameters.TLSv1_2
    assert KEY not in listener_named(with_tls(ListenerTls(CHAIN, KEY, CA, True)), "public").SerializeToString()


def test_without_client_ca_no_validation_and_no_client_certificate_required() -> None:
    context = tls_context(with_tls(ListenerTls(CHAIN, KEY)), "public")
    assert not context.common_tls_context.HasField("validation_context_sds_secret_config")
    assert context.HasField("require_client_certificate") and context.require_client_certificate.value is False
    assert [s.name for s in translated(secret_pb2.Secret, with_tls(ListenerTls(CHAIN, KEY)), "eu-west")] == [
        "public/certificate"]


def test_a_plaintext_listener_has_no_transport_socket() -> None:
    config = with_tls(ListenerTls(CHAIN, KEY))
    (chain,) = listener_named(config, "internal").filter_chains
    assert not chain.HasField("transport_socket")
    assert translate(sample_config(), "eu-west")[urls.SECRET] == []


def test_secrets_go_to_every_envoy_role_that_gets_the_listener() -> None:
    config = with_tls(ListenerTls(CHAIN, KEY))
    for role in ("edge", "sidecar"):
        assert [s.name for s in translated(secret_pb2.Secret, config, "eu-west", role)] == ["public/certificate"]
        assert "public" in [m.name for m in translated(listener_pb2.Listener, config, "eu-west", role)]


def test_secrets_are_attributed_to_the_listener_entry() -> None:
    config = with_tls(ListenerTls(CHAIN, KEY, CA))
    sources = resource_sources(config)
    assert sources[(urls.SECRET, "public/certificate")] == Location("gateway.yaml", 2, 5)
    assert sources[(urls.SECRET, "public/client-ca")] == Location("gateway.yaml", 2, 5)
    assert (urls.SECRET, "internal/certificate") not in sources


def test_a_new_key_changes_only_the_certificate_secret() -> None:
    before = translate(with_tls(ListenerTls(CHAIN, KEY, CA)), "eu-west")
    after = translate(with_tls(ListenerTls(CHAIN, KEY.replace(b"secret", b"rotated"), CA)), "eu-west")
    for type_url in urls.ADS_ORDER:
        old = [m.SerializeToString(deterministic=True) for m in before[type_url]]
        new = [m.SerializeToString(deterministic=True) for m in after[type_url]]
        if type_url == urls.SECRET:
            assert old[0] != new[0] and old[1] == new[1]
        else:
            assert old == new, type_url


def test_secrets_are_pushed_before_the_listeners_that_name_them() -> None:
    from controlplane.snapshot import build_snapshot

    order = list(build_snapshot(translate(with_tls(ListenerTls(CHAIN, KEY)), "eu-west")).types)
    assert order.index(urls.CLUSTER) < order.index(urls.SECRET) < order.index(urls.LISTENER) < order.index(urls.ROUTE)


def test_only_a_listener_verifying_client_certificates_hands_them_to_ext_authz() -> None:
    def sends_certificate(config: Config, name: str) -> bool:
        (chain,) = listener_named(config, name).filter_chains
        manager = hcm_pb2.HttpConnectionManager()
        assert chain.filters[0].typed_config.Unpack(manager)
        found = ext_authz_pb2.ExtAuthz()
        assert manager.http_filters[0].typed_config.Unpack(found)
        return bool(found.include_peer_certificate)

    config = replace(with_tls(ListenerTls(CHAIN, KEY, CA, False), ListenerTls(CHAIN, KEY)),
                     extauthz=ExtAuthzSettings("extauthz"))
    assert sends_certificate(config, "public") is True  # client_ca, even when a certificate is optional
    assert sends_certificate(config, "internal") is False
