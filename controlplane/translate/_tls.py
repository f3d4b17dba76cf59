"""A listener's `tls:` → SDS Secrets and the DownstreamTlsContext that names them.

The certificate and the client CA travel as Secrets over the same ADS stream as the listener, so a
rotated certificate is a new Secret version: Envoy swaps it in without draining the listener.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2

from controlplane.config.model import Listener
from controlplane.translate._protos import ads_config_source, boolean, packed

__all__ = ["TLS_TRANSPORT_SOCKET", "certificate_secret_name", "client_ca_secret_name", "secrets", "transport_socket"]

TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
ALPN = ("h2", "http/1.1")


def certificate_secret_name(item: Listener) -> str:
    return f"{item.name}/certificate"


def client_ca_secret_name(item: Listener) -> str:
    return f"{item.name}/client-ca"


def secrets(item: Listener) -> list[secret_pb2.Secret]:
    """The Secrets `item`'s TLS context names: its certificate, and its client CA when it has one."""
    tls = item.tls
    if tls is None:
        return []
    found = [secret_pb2.Secret(name=certificate_secret_name(item), tls_certificate=common_pb2.TlsCertificate(
        certificate_chain=base_pb2.DataSource(inline_bytes=tls.certificate_chain),
        private_key=base_pb2.DataSource(inline_bytes=tls.private_key),
    ))]
    if tls.client_ca is not None:
        found.append(secret_pb2.Secret(name=client_ca_secret_name(item), validation_context=(
            common_pb2.CertificateValidationContext(trusted_ca=base_pb2.DataSource(inline_bytes=tls.client_ca)))))
    return found


def transport_socket(item: Listener) -> base_pb2.TransportSocket | None:
    """The listener's `envoy.transport_sockets.tls`, or None for a plaintext listener."""
    tls = item.tls
    if tls is None:
        return None
    common = tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2),
        tls_certificate_sds_secret_configs=[
            secret_pb2.SdsSecretConfig(name=certificate_secret_name(item), sds_config=ads_config_source())],
        alpn_protocols=list(ALPN),
    )
    if tls.client_ca is not None:
        common.validation_context_sds_secret_config.CopyFrom(
            secret_pb2.SdsSecretConfig(name=client_ca_secret_name(item), sds_config=ads_config_source()))
    context = tls_pb2.DownstreamTlsContext(common_tls_context=common,
                                           require_client_certificate=boolean(tls.require_client_certificate))
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=packed(context))
