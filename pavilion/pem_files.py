"""Reading a PEM file named by config or a flag (a certificate, a key, a CA bundle): one reader for the
control plane's listener and xDS TLS files and the services' xDS client files."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509

__all__ = ["MAX_PEM_BYTES", "earliest_not_after", "pem_certificates", "read_pem_file"]

MAX_PEM_BYTES = 1024 * 1024  # a chain or bundle is kilobytes; a larger file is not one


def read_pem_file(path: Path) -> bytes:
    """The bytes of a PEM file; ValueError (naming the path, never the content) when it is not a regular
    file (a FIFO would block the load for ever), cannot be read, or is too large to be PEM."""
    if path.exists() and not path.is_file():
        raise ValueError(f"{path} is not a regular file")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_PEM_BYTES:
        raise ValueError(f"{path} is larger than {MAX_PEM_BYTES} bytes; not a PEM file")
    return data


def pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM chain or bundle, in file order; [] when there is none or one is unreadable."""
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return []
    try:
        return list(x509.load_pem_x509_certificates(data))
    except ValueError:
        return []


def earliest_not_after(data: bytes) -> datetime.datetime | None:
    """The earliest notAfter (UTC) among the certificates of a PEM chain or bundle, None without one.

    A chain stops verifying when any of its members expires, so its first expiry is the one to watch.
    """
    return min((certificate.not_valid_after_utc for certificate in pem_certificates(data)), default=None)
