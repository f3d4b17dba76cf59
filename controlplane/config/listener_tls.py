"""A listener's `tls:`: read the certificate, key and client CA files it names and check them.

The files are read at load time (relative to the YAML file that names them) so translation stays
pure: the model keeps the PEM bytes. Every problem is a ConfigError at the field that names the
file. A message never holds key material: only paths, subjects, sizes and dates.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from controlplane.config.model import Config, FileStamp, ListenerTls
from controlplane.config.shape import Fields
from pavilion.errors import ConfigError, ConfigErrors, Location
from pavilion.pem_files import read_pem_file

__all__ = ["LoadErrors", "file_path", "file_stamp", "pem_certificates", "read_listener_tls", "referenced_files",
           "same_public_key", "stamps_now"]

MIN_RSA_BITS = 2048
EC_CURVES = ("secp256r1", "secp384r1")  # P-256, P-384

Problem = Callable[[str, Location, str], None]
Clock = Callable[[], datetime.datetime]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def file_path(value: str) -> str:
    """A `Value` conversion: a file name, not blank."""
    if not value.strip():
        raise ValueError("must name a file")
    return value


def file_stamp(path: str) -> tuple[int, int, int, int] | None:
    """What stat says of the file `path` resolves to (symlinks followed), None when it cannot."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class LoadErrors(ConfigErrors):
    """The problems of a load, and the files besides the YAML it read (a fix to one must be noticed)."""

    def __init__(self, errors: list[ConfigError], files: tuple[FileStamp, ...]) -> None:
        super().__init__(errors)
        self.files = files


def referenced_files(outcome: object) -> tuple[FileStamp, ...]:
    """Every file besides the YAML a load read, with its stamp at read time: of a loaded Config, or
    of a load that failed (LoadErrors)."""
    if isinstance(outcome, LoadErrors):
        return outcome.files
    if not isinstance(outcome, Config):
        return ()
    return tuple(stamp for item in outcome.listeners if item.tls is not None for stamp in item.tls.files)


def read_listener_tls(f: Fields, problem: Problem, read: list[FileStamp], now: Clock = _now) -> ListenerTls | None:
    """The checked `tls:` of a listener (`f` is its complete `tls` fields), or None after reporting.
    Each file tried is added to `read`, good or bad: a fix to a bad one must be noticed too."""
    base = Path(f.loc.file).parent
    stamps: list[FileStamp] = []
    chain = _read(f, "certificate", base, stamps, problem)
    key_bytes = _read(f, "key", base, stamps, problem)
    ca = _read(f, "client_ca", base, stamps, problem) if "client_ca" in f else None
    read.extend(stamps)
    require = bool(f.get("require_client_certificate", False))
    ok = chain is not None and key_bytes is not None and ("client_ca" not in f or ca is not None)
    if require and "client_ca" not in f:
        problem("require_client_certificate needs client_ca, the CA client certificates are verified against",
                f.at("require_client_certificate"), f.path_of("require_client_certificate"))
        ok = False
    leaf = _leaf(f, chain, now, problem) if chain is not None else None
    key = _private_key(f, key_bytes, problem) if key_bytes is not None else None
    if leaf is not None and key is not None:
        ok = _key_matches(f, leaf, key, problem) and ok
    if ca is not None:
        ok = _bundle(f, ca, problem) and ok
    if not ok or leaf is None or key is None or chain is None or key_bytes is None:
        return None
    return ListenerTls(chain, key_bytes, ca, require, tuple(stamps))


def _read(f: Fields, name: str, base: Path, stamps: list[FileStamp], problem: Problem) -> bytes | None:
    path = base / f.get(name)
    stamp = file_stamp(str(path))
    stamps.append((str(path), stamp))  # before reading: a change after the stat is seen by the next poll
    try:
        return read_pem_file(path)
    except ValueError as exc:
        problem(str(exc), f.at(name), f.path_of(name))
        return None


def pem_certificates(data: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return []
    try:
        return list(x509.load_pem_x509_certificates(data))
    except ValueError:
        return []


def _leaf(f: Fields, chain: bytes, now: Clock, problem: Problem) -> x509.Certificate | None:
    certificates = pem_certificates(chain)
    where, path = f.at("certificate"), f.path_of("certificate")
    if not certificates:
        problem(f"{f.get('certificate')} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", where, path)
        return None
    leaf = certificates[0]
    expired = leaf.not_valid_after_utc
    if expired <= now():
        problem(f"the certificate {leaf.subject.rfc4514_string()!r} (the first in the file) expired on "
                f"{expired:%Y-%m-%d %H:%M:%S} UTC", where, path)
        return None
    return leaf


def _private_key(f: Fields, data: bytes, problem: Problem) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None:
    where, path = f.at("key"), f.path_of("key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnicodeError):
        # Never the exception's text: the message goes to logs and /status, and must say nothing of the key.
        problem(f"{f.get('key')} holds no readable PEM private key (unencrypted PKCS#8, PKCS#1 or SEC1)",
                where, path)
        return None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            problem(f"the RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are needed", where, path)
            return None
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in EC_CURVES:
            problem(f"the EC key is on {key.curve.name}; use P-256 or P-384", where, path)
            return None
        return key
    problem(f"a {type(key).__name__.removeprefix('_')} key is not supported; use RSA (2048 bits or more) "
            "or EC P-256/P-384", where, path)
    return None


def _key_matches(f: Fields, leaf: x509.Certificate, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
                 problem: Problem) -> bool:
    if same_public_key(leaf, key):
        return True
    problem(f"{f.get('key')} is not the key of the certificate {leaf.subject.rfc4514_string()!r} in "
            f"{f.get('certificate')} (the first certificate of the file)", f.at("key"), f.path_of("key"))
    return False


def same_public_key(leaf: x509.Certificate, key: PrivateKeyTypes) -> bool:
    der, info = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(leaf.public_key().public_bytes(der, info) == key.public_key().public_bytes(der, info))


def _bundle(f: Fields, data: bytes, problem: Problem) -> bool:
    if pem_certificates(data):
        return True
    problem(f"{f.get('client_ca')} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", f.at("client_ca"),
            f.path_of("client_ca"))
    return False


def stamps_now(paths: Iterable[str]) -> tuple[FileStamp, ...]:
    """The stamps of `paths` as they are now (blocking: call from a thread)."""
    return tuple((path, file_stamp(path)) for path in paths)
