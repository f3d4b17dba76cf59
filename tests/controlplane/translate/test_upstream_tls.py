"""A service with `tls:` gets a cluster transport socket (UpstreamTlsContext) naming SDS secrets after
the service, fetched over ADS; the names a host's certificate must carry stay in the cluster."""

from __future__ import annotations

from dataclasses import replace

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2

from controlplane import resources as urls
from controlplane.config.model import Config, ListenerTls, UpstreamTls
from controlplane.plan import shown_text
from controlplane.translate import resource_sources, translate
from tests.controlplane.translate.sample import REGIONS, sample_config, translated

CA = b"-----BEGIN CERTIFICATE-----\nupstream ca\n-----END CERTIFICATE-----\n"
CHAIN = b"-----BEGIN CERTIFICATE-----\ngateway\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nclient secret\n-----END PRIVATE KEY-----\n"
SAN = common_pb2.SubjectAltNameMatcher


def with_tls(accounts: UpstreamTls | None, billing: UpstreamTls | None = None, protocol: str = "http1") -> Config:
    config = sample_config()
    tls = {"accounts": accounts, "billing": billing}
    return replace(config, services=tuple(replace(s, tls=tls.get(s.name), protocol=protocol)
                                          for s in config.services))


def cluster_named(config: Config, name: str, region: str = "eu-west", role: str = "edge") -> cluster_pb2.Cluster:
    (found,) = [c for c in translated(cluster_pb2.Cluster, config, region, role) if c.name == name]
    return found


def tls_context(config: Config, name: str) -> tls_pb2.UpstreamTlsContext:
    socket = cluster_named(config, name).transport_socket
    assert socket.name == "envoy.transport_sockets.tls"
    context = tls_pb2.UpstreamTlsContext()
    assert socket.typed_config.Unpack(context)
    return context


def test_secrets_are_named_after_the_service_in_every_region_and_role() -> None:
    config = with_tls(UpstreamTls(CA, "accounts.internal", certificate_chain=CHAIN, private_key=KEY),
                      UpstreamTls(CA, "billing.internal"))
    for region in REGIONS:
        for role in ("edge", "sidecar"):
            assert [s.name for s in translated(secret_pb2.Secret, config, region, role)] == [
                "accounts/client-certificate", "accounts/upstream-ca", "billing/upstream-ca"]
    certificate, ca, _billing = translated(secret_pb2.Secret, config, "eu-west")
    assert ca.validation_context == common_pb2.CertificateValidationContext(trusted_ca={"inline_bytes": CA})
    assert certificate.tls_certificate == common_pb2.TlsCertificate(
        certificate_chain={"inline_bytes": CHAIN}, private_key={"inline_bytes": KEY})


def test_listener_and_service_secrets_are_served_together_sorted() -> None:
    config = with_tls(UpstreamTls(CA, "accounts.internal"))
    config = replace(config, listeners=tuple(replace(item, tls=ListenerTls(CHAIN, KEY) if item.name == "public"
                                                     else None) for item in config.listeners))
    assert [s.name for s in translated(secret_pb2.Secret, config, "eu-west")] == [
        "accounts/upstream-ca", "public/certificate"]


def test_the_cluster_verifies_the_ca_and_the_server_name_over_sds() -> None:
    context = tls_context(with_tls(UpstreamTls(CA, "accounts.internal")), "accounts")
    assert context.sni == "accounts.internal"
    common = context.common_tls_context
    assert common.tls_params.tls_minimum_protocol_version == common_pb2.TlsParameters.TLSv1_2
    assert common.tls_params.tls_maximum_protocol_version == common_pb2.TlsParameters.TLSv1_3
    assert list(common.alpn_protocols) == ["http/1.1"]
    assert not common.tls_certificate_sds_secret_configs and not common.tls_certificates
    combined = common.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "accounts/upstream-ca"
    assert combined.validation_context_sds_secret_config.sds_config.HasField("ads")
    assert list(combined.default_validation_context.match_typed_subject_alt_names) == [
        SAN(san_type=SAN.DNS, matcher={"exact": "accounts.internal"})]
    assert not combined.default_validation_context.HasField("trusted_ca")  # the CA comes over SDS only
    assert CA not in cluster_named(with_tls(UpstreamTls(CA, "accounts.internal")), "accounts").SerializeToString()


def test_subject_alt_names_replace_the_server_name_in_the_check() -> None:
    tls = UpstreamTls(CA, "", ("accounts.internal", "*.accounts.internal", "10.0.0.7", "::1"))
    context = tls_context(with_tls(tls), "accounts")
    assert context.sni == ""
    matchers = list(context.common_tls_context.combined_validation_context.default_validation_context
                    .match_typed_subject_alt_names)
    assert matchers == [
        SAN(san_type=SAN.DNS, matcher={"exact": "accounts.internal"}),
        SAN(san_type=SAN.DNS, matcher={"safe_regex": {"regex": r"[^.]+\.accounts\.internal"}}),
        SAN(san_type=SAN.IP_ADDRESS, matcher={"exact": "10.0.0.7"}),
        SAN(san_type=SAN.IP_ADDRESS, matcher={"exact": "::1"}),
    ]
    named = tls_context(with_tls(replace(tls, server_name="api.accounts.internal")), "accounts")
    assert named.sni == "api.accounts.internal"
    assert len(named.common_tls_context.combined_validation_context.default_validation_context
               .match_typed_subject_alt_names) == 4


def test_alpn_follows_the_protocol() -> None:
    for protocol, alpn in (("http1", ["http/1.1"]), ("http2", ["h2"]), ("grpc", ["h2"])):
        context = tls_context(with_tls(UpstreamTls(CA, "accounts.internal"), protocol=protocol), "accounts")
        assert list(context.common_tls_context.alpn_protocols) == alpn, protocol


def test_a_client_certificate_is_named_over_sds_never_inlined() -> None:
    config = with_tls(UpstreamTls(CA, "accounts.internal", certificate_chain=CHAIN, private_key=KEY))
    (certificate,) = tls_context(config, "accounts").common_tls_context.tls_certificate_sds_secret_configs
    assert certificate.name == "accounts/client-certificate" and certificate.sds_config.HasField("ads")
    assert KEY not in cluster_named(config, "accounts").SerializeToString()


def test_a_plaintext_service_has_no_transport_socket_and_no_secret() -> None:
    config = with_tls(UpstreamTls(CA, "accounts.internal"))
    assert not cluster_named(config, "billing").HasField("transport_socket")
    assert cluster_named(config, "accounts").HasField("transport_socket")
    assert translate(sample_config(), "eu-west")[urls.SECRET] == []


def test_secrets_are_attributed_to_the_service_entry() -> None:
    config = with_tls(UpstreamTls(CA, "accounts.internal", certificate_chain=CHAIN, private_key=KEY))
    sources = resource_sources(config)
    accounts = next(s for s in config.services if s.name == "accounts").source
    assert sources[(urls.SECRET, "accounts/upstream-ca")] == accounts
    assert sources[(urls.SECRET, "accounts/client-certificate")] == accounts
    assert (urls.SECRET, "billing/upstream-ca") not in sources


def test_a_new_ca_changes_only_the_ca_secret() -> None:
    before = translate(with_tls(UpstreamTls(CA, "accounts.internal", certificate_chain=CHAIN, private_key=KEY)),
                       "eu-west")
    after = translate(with_tls(UpstreamTls(CA.replace(b"upstream", b"rotated"), "accounts.internal",
                                           certificate_chain=CHAIN, private_key=KEY)), "eu-west")
    for type_url in urls.ADS_ORDER:
        old = [m.SerializeToString(deterministic=True) for m in before[type_url]]
        new = [m.SerializeToString(deterministic=True) for m in after[type_url]]
        if type_url == urls.SECRET:
            assert old[0] == new[0] and old[1] != new[1]  # client-certificate, upstream-ca
        else:
            assert old == new, type_url


def test_the_client_key_is_never_shown() -> None:
    config = with_tls(UpstreamTls(CA, "accounts.internal", certificate_chain=CHAIN, private_key=KEY))
    certificate = next(s for s in translated(secret_pb2.Secret, config, "eu-west")
                       if s.name == "accounts/client-certificate")
    assert b"client secret" in certificate.SerializeToString()
    text = shown_text(certificate)
    assert "client secret" not in text and "[private key, sha256 " in text
    assert "gateway" in text  # the certificate is shown
