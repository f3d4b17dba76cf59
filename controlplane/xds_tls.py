"""The xDS port's own TLS (`pavilion controlplane --xds-tls-cert/--xds-tls-key/--xds-client-ca`).

With listener TLS the ADS stream carries private keys (SDS secrets), so it must be encrypted unless
it stays on loopback. The files are read and checked once at start; every problem is a ConfigError
naming the flag and the file, never the key's bytes or a parser's text about them.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization

from controlplane.config.listener_tls import pem_certificates, same_public_key
from pavilion.errors import ConfigError
from pavilion.grpc_server import ServerTLS
from pavilion.pem_files import read_pem_file

__all__ = ["load_server_tls"]


def load_server_tls(cert: str | None, key: str | None, client_ca: str | None = None) -> ServerTLS | None:
    """The server TLS of the flags, or None when neither certificate nor key is given."""
    if not cert and not key:
        if client_ca:
            raise ConfigError("needs --xds-tls-cert and --xds-tls-key: client certificates are asked for "
                              "only over TLS", path="--xds-client-ca")
        return None
    if not cert or not key:
        given, missing = ("--xds-tls-cert", "--xds-tls-key") if cert else ("--xds-tls-key", "--xds-tls-cert")
        raise ConfigError(f"needs {missing} too: give both or neither", path=given)
    chain = _read("--xds-tls-cert", cert)
    key_bytes = _read("--xds-tls-key", key)
    certificates = pem_certificates(chain)
    if not certificates:
        raise ConfigError(f"{cert} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path="--xds-tls-cert")
    try:
        private = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError, UnicodeError):
        # Never the exception's text: it may quote the key.
        raise ConfigError(f"{key} holds no readable unencrypted PEM private key", path="--xds-tls-key") from None
    leaf = certificates[0]
    if not same_public_key(leaf, private):
        raise ConfigError(f"{key} is not the key of the certificate {leaf.subject.rfc4514_string()!r} in {cert} "
                          "(the first certificate of the file)", path="--xds-tls-key")
    ca_bytes = None
    if client_ca:
        ca_bytes = _read("--xds-client-ca", client_ca)
        if not pem_certificates(ca_bytes):
            raise ConfigError(f"{client_ca} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                              path="--xds-client-ca")
    return ServerTLS(cert_chain=chain, private_key=key_bytes, client_ca=ca_bytes)


def _read(flag: str, name: str) -> bytes:
    try:
        return read_pem_file(Path(name))
    except ValueError as exc:
        raise ConfigError(str(exc), path=flag) from None
