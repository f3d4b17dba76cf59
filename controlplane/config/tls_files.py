"""The TLS files the route YAML names (a listener's and a service's `tls:`): read relative to the YAML,
checked with `cryptography`, every problem a ConfigError at the field that names the file.

One reader, one certificate parser, one key check for both sides. A message never holds key
material: only paths, subjects, sizes and dates.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from controlplane.config.model import Config, FileStamp
from controlplane.config.shape import Fields
from pavilion.errors import ConfigError, ConfigErrors, Location
from pavilion.pem_files import pem_certificates, read_pem_file
from pavilion.server_tls import file_stamp, same_public_key

__all__ = ["Clock", "LoadErrors", "Problem", "TlsFiles", "file_path", "file_stamp", "now", "pem_certificates",
           "referenced_files", "same_public_key", "stamps_now"]

MIN_RSA_BITS = 2048
EC_CURVES = ("secp256r1", "secp384r1")  # P-256, P-384

Problem = Callable[[str, Location, str], None]
Clock = Callable[[], datetime.datetime]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def file_path(value: str) -> str:
    """A `Value` conversion: a file name, not blank."""
    if not value.strip():
        raise ValueError("must name a file")
    return value


def stamps_now(paths: Iterable[str]) -> tuple[FileStamp, ...]:
    """The stamps of `paths` as they are now (blocking: call from a thread)."""
    return tuple((path, file_stamp(path)) for path in paths)


class LoadErrors(ConfigErrors):
    """The problems of a load, and the files besides the YAML it read (a fix to one must be noticed)."""

    def __init__(self, errors: list[ConfigError], files: tuple[FileStamp, ...]) -> None:
        super().__init__(errors)
        self.files = files


def referenced_files(outcome: object) -> tuple[FileStamp, ...]:
    """Every file besides the YAML a load read, with its stamp at read time: of a loaded Config (its
    listeners' and services' TLS files), or of a load that failed (LoadErrors)."""
    if isinstance(outcome, LoadErrors):
        return outcome.files
    if not isinstance(outcome, Config):
        return ()
    listeners = (stamp for item in outcome.listeners if item.tls is not None for stamp in item.tls.files)
    services = (stamp for item in outcome.services if item.tls is not None for stamp in item.tls.files)
    return (*listeners, *services)


class TlsFiles:
    """Reads and checks the files named by the fields of one `tls:` mapping `f`.

    Every file tried is added to `stamps`, good or bad: a fix to a bad one must be noticed too.
    """

    def __init__(self, f: Fields, problem: Problem, clock: Clock = now) -> None:
        self.f = f
        self.problem = problem
        self.clock = clock
        self.base = Path(f.loc.file).parent
        self.stamps: list[FileStamp] = []

    def read(self, name: str) -> bytes | None:
        """The bytes of the file field `name` names, or None after reporting."""
        path = self.base / self.f.get(name)
        self.stamps.append((str(path), file_stamp(str(path))))  # before reading: a later change is seen next poll
        try:
            return read_pem_file(path)
        except ValueError as exc:
            self.problem(str(exc), self.f.at(name), self.f.path_of(name))
            return None

    def bundle(self, name: str) -> bytes | None:
        """A CA bundle: the bytes of field `name`'s file when it holds a certificate."""
        data = self.read(name)
        if data is None:
            return None
        if pem_certificates(data):
            return data
        self._no_certificate(name)
        return None

    def pair(self, certificate: str, key: str) -> tuple[bytes, bytes] | None:
        """(chain, key) of a certificate chain, leaf first, not expired, and its private key."""
        chain, key_bytes = self.read(certificate), self.read(key)
        leaf = self._leaf(certificate, chain) if chain is not None else None
        private = self._private_key(key, key_bytes) if key_bytes is not None else None
        if chain is None or key_bytes is None or leaf is None or private is None:
            return None
        if not same_public_key(leaf, private):
            self.problem(f"{self.f.get(key)} is not the key of the certificate {leaf.subject.rfc4514_string()!r} in "
                         f"{self.f.get(certificate)} (the first certificate of the file)", self.f.at(key),
                         self.f.path_of(key))
            return None
        return chain, key_bytes

    def _no_certificate(self, name: str) -> None:
        self.problem(f"{self.f.get(name)} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", self.f.at(name),
                     self.f.path_of(name))

    def _leaf(self, name: str, chain: bytes) -> x509.Certificate | None:
        certificates = pem_certificates(chain)
        if not certificates:
            self._no_certificate(name)
            return None
        leaf = certificates[0]
        expired = leaf.not_valid_after_utc
        if expired <= self.clock():
            self.problem(f"the certificate {leaf.subject.rfc4514_string()!r} (the first in the file) expired on "
                         f"{expired:%Y-%m-%d %H:%M:%S} UTC", self.f.at(name), self.f.path_of(name))
            return None
        return leaf

    def _private_key(self, name: str, data: bytes) -> PrivateKey | None:
        where, path = self.f.at(name), self.f.path_of(name)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnicodeError):
            # Never the exception's text: the message goes to logs and /status, and must say nothing of the key.
            self.problem(f"{self.f.get(name)} holds no readable PEM private key (unencrypted PKCS#8, PKCS#1 or SEC1)",
                         where, path)
            return None
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size < MIN_RSA_BITS:
                self.problem(f"the RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are needed", where, path)
                return None
            return key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            if key.curve.name not in EC_CURVES:
                self.problem(f"the EC key is on {key.curve.name}; use P-256 or P-384", where, path)
                return None
            return key
        self.problem(f"a {type(key).__name__.removeprefix('_')} key is not supported; use RSA (2048 bits or more) "
                     "or EC P-256/P-384", where, path)
        return None
