"""The xDS port's own TLS (`pavilion controlplane --xds-tls-cert/--xds-tls-key/--xds-client-ca`).

With listener TLS the ADS stream carries private keys (SDS secrets), so it must be encrypted unless
it stays on loopback. The files are read and checked once at start; every problem is a ConfigError
naming the flag and the file, never the key's bytes or a parser's text about them.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from controlplane.config.listener_tls import MAX_PEM_BYTES
from pavilion.errors import ConfigError
from pavilion.grpc_server import ServerTLS

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
    certificates = _certificates(chain)
    if not certificates:
        raise ConfigError(f"{cert} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path="--xds-tls-cert")
    try:
        private = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError, UnicodeError):
        # Never the exception's text: it may quote the key.
        raise ConfigError(f"{key} holds no readable unencrypted PEM private key", path="--xds-tls-key") from None
    der, info = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    leaf = certificates[0]
    if leaf.public_key().public_bytes(der, info) != private.public_key().public_bytes(der, info):
        raise ConfigError(f"{key} is not the key of the certificate {leaf.subject.rfc4514_string()!r} in {cert} "
                          "(the first certificate of the file)", path="--xds-tls-key")
    ca_bytes = None
    if client_ca:
        ca_bytes = _read("--xds-client-ca", client_ca)
        if not _certificates(ca_bytes):
            raise ConfigError(f"{client_ca} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                              path="--xds-client-ca")
    return ServerTLS(cert_chain=chain, private_key=key_bytes, client_ca=ca_bytes)


def _read(flag: str, name: str) -> bytes:
    path = Path(name)
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path} is not a regular file", path=flag)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or type(exc).__name__}", path=flag) from None
    if len(data) > MAX_PEM_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_PEM_BYTES} bytes; not a PEM file", path=flag)
    return data


def _certificates(data: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return []
    try:
        return list(x509.load_pem_x509_certificates(data))
    except ValueError:
        return []
