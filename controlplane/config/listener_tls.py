"""A listener's `tls:`: read the certificate, key and client CA files it names and check them.

The files are read at load time (relative to the YAML file that names them) so translation stays
pure: the model keeps the PEM bytes. The reading and checking is shared with a service's `tls:`
(controlplane.config.tls_files); the names below are kept here for the modules that import them.
"""

from __future__ import annotations

from controlplane.config.model import FileStamp, ListenerTls
from controlplane.config.shape import Fields
from controlplane.config.tls_files import (
    Clock,
    LoadErrors,
    Problem,
    TlsFiles,
    file_path,
    file_stamp,
    now,
    pem_certificates,
    referenced_files,
    same_public_key,
    stamps_now,
)

__all__ = ["LoadErrors", "file_path", "file_stamp", "pem_certificates", "read_listener_tls", "referenced_files",
           "same_public_key", "stamps_now"]


def read_listener_tls(f: Fields, problem: Problem, read: list[FileStamp], clock: Clock = now) -> ListenerTls | None:
    """The checked `tls:` of a listener (`f` is its complete `tls` fields), or None after reporting.
    Each file tried is added to `read`, good or bad: a fix to a bad one must be noticed too."""
    files = TlsFiles(f, problem, clock)
    pair = files.pair("certificate", "key")
    ca = files.bundle("client_ca") if "client_ca" in f else None
    read.extend(files.stamps)
    require = bool(f.get("require_client_certificate", False))
    ok = pair is not None and ("client_ca" not in f or ca is not None)
    if require and "client_ca" not in f:
        problem("require_client_certificate needs client_ca, the CA client certificates are verified against",
                f.at("require_client_certificate"), f.path_of("require_client_certificate"))
        ok = False
    if not ok or pair is None:
        return None
    chain, key = pair
    return ListenerTls(chain, key, ca, require, tuple(files.stamps))
