"""A gRPC server's own TLS from PEM files named by flags: the control plane's xDS port
(`--xds-tls-cert/--xds-tls-key/--xds-client-ca`) and ext_authz's and ratelimit's port
(`--tls-cert/--tls-key/--tls-client-ca`) read and check their files here, one set of checks for all.

Every problem is a ConfigError naming the flag and the file, never the key's bytes nor a parser's
text about them. grpc is not imported here (`pavilion.tls_rotation` makes the credentials), so the
checks run before anything heavy starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from pavilion.errors import ConfigError
from pavilion.pem_files import pem_certificates, read_pem_file

__all__ = ["SERVICE_FLAGS", "XDS_FLAGS", "FileStamps", "ServerTLS", "TlsFlags", "TlsSource", "file_stamp",
           "load_server_tls", "same_public_key"]

FileStamps = tuple[tuple[int, int, int, int] | None, ...]


@dataclass(frozen=True)
class TlsFlags:
    """The names of the three flags, for messages."""

    cert: str
    key: str
    client_ca: str


SERVICE_FLAGS = TlsFlags("--tls-cert", "--tls-key", "--tls-client-ca")
XDS_FLAGS = TlsFlags("--xds-tls-cert", "--xds-tls-key", "--xds-client-ca")


@dataclass(frozen=True)
class TlsSource:
    """The files a ServerTLS was read from, so that a rotated file can be read again."""

    cert: str
    key: str
    client_ca: str
    flags: TlsFlags

    def load(self) -> ServerTLS:
        tls = load_server_tls(self.cert, self.key, self.client_ca, self.flags)
        if tls is None:  # cert and key are never both empty in a source
            raise ConfigError("no certificate", path=self.flags.cert)
        return tls

    def stamps(self) -> FileStamps:
        """What stat says of each file (symlinks followed: cert-manager swaps a `..data` link), None when
        it cannot; a change of any means the files may hold a new certificate."""
        return tuple(file_stamp(path) for path in (self.cert, self.key, self.client_ca) if path)


@dataclass(frozen=True)
class ServerTLS:
    cert_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None  # set to require client certificates (mTLS)
    source: TlsSource | None = None  # the files, when read from files: re-read when they change


def load_server_tls(cert: str | None, key: str | None, client_ca: str | None = None,
                    flags: TlsFlags = SERVICE_FLAGS) -> ServerTLS | None:
    """The server TLS of the flags, or None when neither certificate nor key is given."""
    if not cert and not key:
        if client_ca:
            raise ConfigError(f"needs {flags.cert} and {flags.key}: client certificates are asked for only over TLS",
                              path=flags.client_ca)
        return None
    if not cert or not key:
        given, missing = (flags.cert, flags.key) if cert else (flags.key, flags.cert)
        raise ConfigError(f"needs {missing} too: give both or neither", path=given)
    chain = _read(flags.cert, cert)
    key_bytes = _read(flags.key, key)
    certificates = pem_certificates(chain)
    if not certificates:
        raise ConfigError(f"{cert} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path=flags.cert)
    try:
        private = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError, UnicodeError):
        # Never the exception's text: it may quote the key.
        raise ConfigError(f"{key} holds no readable unencrypted PEM private key", path=flags.key) from None
    except UnsupportedAlgorithm:
        raise ConfigError(f"{key} holds a key of a kind or curve that is not supported", path=flags.key) from None
    leaf = certificates[0]
    if not same_public_key(leaf, private):
        raise ConfigError(f"{key} is not the key of the certificate {leaf.subject.rfc4514_string()!r} in {cert} "
                          "(the first certificate of the file)", path=flags.key)
    ca_bytes = None
    if client_ca:
        ca_bytes = _read(flags.client_ca, client_ca)
        if not pem_certificates(ca_bytes):
            raise ConfigError(f"{client_ca} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                              path=flags.client_ca)
    return ServerTLS(cert_chain=chain, private_key=key_bytes, client_ca=ca_bytes,
                     source=TlsSource(cert, key, client_ca or "", flags))


def same_public_key(leaf: x509.Certificate, key: PrivateKeyTypes) -> bool:
    der, info = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(leaf.public_key().public_bytes(der, info) == key.public_key().public_bytes(der, info))


def _read(flag: str, name: str) -> bytes:
    try:
        return read_pem_file(Path(name))
    except ValueError as exc:
        raise ConfigError(str(exc), path=flag) from None


def file_stamp(path: str) -> tuple[int, int, int, int] | None:
    """What stat says of the file `path` resolves to (symlinks followed), None when it cannot."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns
