"""TLS → SDS Secrets and the TLS contexts that name them: a listener's `tls:` (DownstreamTlsContext on
its filter chain) and a service's `tls:` (UpstreamTlsContext on its cluster).

Certificates, keys and CAs travel as Secrets over the same ADS stream as the listeners and clusters,
so a rotated file is a new Secret version: Envoy swaps it in without draining a listener or
rebuilding a cluster. The listener or cluster only names the secrets; no key travels inside it.

A listener's certificate is one name, `<listener>/certificate`, in every region; with `tls.regions` each
region's snapshot carries its own content under that name. The Listener is then the same bytes in every
region (one translation, shared), and only the Secret differs, as endpoints do.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from controlplane.config.model import Config, Listener, Service
from controlplane.translate._protos import ads_config_source, boolean, packed

__all__ = ["TLS_TRANSPORT_SOCKET", "certificate_secret_name", "certificate_variants", "client_ca_secret_name",
           "client_certificate_forwarding", "client_certificate_secret_name", "regional_certificates", "secrets",
           "transport_socket", "upstream_ca_secret_name", "upstream_secrets", "upstream_transport_socket"]

TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
ALPN = ("h2", "http/1.1")
_SAN = common_pb2.SubjectAltNameMatcher
_HCM = hcm_pb2.HttpConnectionManager


def certificate_secret_name(item: Listener) -> str:
    return f"{item.name}/certificate"


def client_ca_secret_name(item: Listener) -> str:
    return f"{item.name}/client-ca"


def upstream_ca_secret_name(service: Service) -> str:
    return f"{service.name}/upstream-ca"


def client_certificate_secret_name(service: Service) -> str:
    return f"{service.name}/client-certificate"


def _certificate_secret(name: str, chain: bytes, key: bytes) -> secret_pb2.Secret:
    return secret_pb2.Secret(name=name, tls_certificate=common_pb2.TlsCertificate(
        certificate_chain=base_pb2.DataSource(inline_bytes=chain),
        private_key=base_pb2.DataSource(inline_bytes=key),
    ))


def _ca_secret(name: str, ca: bytes) -> secret_pb2.Secret:
    return secret_pb2.Secret(name=name, validation_context=common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(inline_bytes=ca)))


def _sds(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads_config_source())


def _common(alpn: tuple[str, ...], certificate: str | None) -> tls_pb2.CommonTlsContext:
    return tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2,
                                            tls_maximum_protocol_version=common_pb2.TlsParameters.TLSv1_3),
        tls_certificate_sds_secret_configs=[_sds(certificate)] if certificate is not None else [],
        alpn_protocols=list(alpn),
    )


def secrets(item: Listener, region: str = "") -> list[secret_pb2.Secret]:
    """The Secrets `item`'s TLS context names, as a node of `region` gets them: its certificate (the
    region's own when `tls.regions` has one), and its client CA when it has one."""
    tls = item.tls
    if tls is None:
        return []
    found = [_certificate_secret(certificate_secret_name(item), *tls.certificate_for(region))]
    if tls.client_ca is not None:
        found.append(_ca_secret(client_ca_secret_name(item), tls.client_ca))
    return found


def certificate_variants(item: Listener) -> list[tuple[str, str, secret_pb2.Secret]]:
    """Every certificate Secret of `item` any region may get, as (label, region, Secret): the default
    labelled `<listener>/certificate` (region ""), each `tls.regions` entry `<listener>/certificate@<region>`.
    Every node asks for the same name; the label tells the certificates apart in metrics and warnings."""
    tls = item.tls
    if tls is None:
        return []
    name = certificate_secret_name(item)
    found = []
    if tls.certificate_chain:
        found.append((name, "", _certificate_secret(name, tls.certificate_chain, tls.private_key)))
    for entry in tls.regions:
        found.append((f"{name}@{entry.region}", entry.region,
                      _certificate_secret(name, entry.certificate_chain, entry.private_key)))
    return found


def regional_certificates(config: Config) -> bool:
    """Whether a listener of `config` serves some region a certificate of its own (Secrets then differ by region)."""
    return any(item.tls is not None and item.tls.regions for item in config.listeners)


_XFCC_FLAGS = ("uri", "dns", "cert", "chain")  # plain bools of SetCurrentClientCertDetails; `subject` is wrapped


def client_certificate_forwarding(item: Listener) -> dict[str, Any]:
    """The HTTP connection manager's x-forwarded-client-cert settings (keyword arguments): with
    `tls.forward_client_certificate`, SANITIZE_SET with the chosen elements (Envoy always adds Hash);
    otherwise nothing, which is Envoy's SANITIZE: a client's own header is removed, none is set."""
    tls = item.tls
    if tls is None or not tls.forward_client_certificate:
        return {}
    chosen = set(tls.forward_client_certificate)
    details = _HCM.SetCurrentClientCertDetails(**{name: True for name in _XFCC_FLAGS if name in chosen})
    if "subject" in chosen:
        details.subject.value = True
    return {"forward_client_cert_details": _HCM.SANITIZE_SET, "set_current_client_cert_details": details}


def transport_socket(item: Listener) -> base_pb2.TransportSocket | None:
    """The listener's `envoy.transport_sockets.tls`, or None for a plaintext listener."""
    tls = item.tls
    if tls is None:
        return None
    common = _common(ALPN, certificate_secret_name(item))
    if tls.client_ca is not None:
        common.validation_context_sds_secret_config.CopyFrom(_sds(client_ca_secret_name(item)))
    context = tls_pb2.DownstreamTlsContext(common_tls_context=common,
                                           require_client_certificate=boolean(tls.require_client_certificate))
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=packed(context))


def upstream_secrets(service: Service) -> list[secret_pb2.Secret]:
    """The Secrets `service`'s cluster names: the CA its hosts are verified against, and the client
    certificate shown to them when it has one."""
    tls = service.tls
    if tls is None:
        return []
    found = [_ca_secret(upstream_ca_secret_name(service), tls.ca)]
    if tls.certificate_chain is not None and tls.private_key is not None:
        found.append(_certificate_secret(client_certificate_secret_name(service), tls.certificate_chain,
                                         tls.private_key))
    return found


def upstream_transport_socket(service: Service) -> base_pb2.TransportSocket | None:
    """The cluster's `envoy.transport_sockets.tls`, or None when it speaks plaintext to its hosts.

    The CA comes over SDS; the names a host's certificate must carry stay in the cluster, merged with
    it by a combined validation context, so a new CA changes the Secret only.
    """
    tls = service.tls
    if tls is None:
        return None
    mtls = tls.certificate_chain is not None
    common = _common(("http/1.1",) if service.protocol == "http1" else ("h2",),
                     client_certificate_secret_name(service) if mtls else None)
    common.combined_validation_context.CopyFrom(tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
        default_validation_context=common_pb2.CertificateValidationContext(
            match_typed_subject_alt_names=[_san_matcher(name) for name in tls.accepted_names]),
        validation_context_sds_secret_config=_sds(upstream_ca_secret_name(service)),
    ))
    context = tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=tls.server_name)
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=packed(context))


def _san_matcher(name: str) -> common_pb2.SubjectAltNameMatcher:
    """An IP address matches an IP SAN; a DNS name a DNS SAN exactly (Envoy lets a certificate's `*.x`
    stand for `a.x`); `*.x` any one label in front of x, as a regex."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return _SAN(san_type=_SAN.IP_ADDRESS, matcher=string_pb2.StringMatcher(exact=name))
    if name.startswith("*."):
        pattern = r"[^.]+" + name[1:].replace(".", r"\.")  # labels hold letters, digits and '-' only
        return _SAN(san_type=_SAN.DNS, matcher=string_pb2.StringMatcher(
            safe_regex=regex_pb2.RegexMatcher(regex=pattern)))
    return _SAN(san_type=_SAN.DNS, matcher=string_pb2.StringMatcher(exact=name))
