"""A service's `tls:`: Envoy speaks TLS to the hosts, verifying their certificates against `ca` and a
name, and shows them a client certificate when `certificate` and `key` are given (mTLS).

The files are read and checked like a listener's (controlplane.config.tls_files). Endpoints are IP
addresses (Envoy resolves no names it gets over EDS), so there is no host name to default to: the
name a host's certificate must carry is `server_name` (also sent as SNI) or `subject_alt_names`.
"""

from __future__ import annotations

import ipaddress
import re

from controlplane.config.model import FileStamp, UpstreamTls
from controlplane.config.shape import Fields
from controlplane.config.tls_files import Clock, Problem, TlsFiles, now

__all__ = ["read_service_tls", "server_name", "subject_alt_name"]

_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _dns_name(text: str) -> bool:
    labels = text.split(".")
    return len(text) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def server_name(text: str) -> str:
    """A `Value` conversion: a DNS name to send as SNI (never an IP address, no wildcard); lower case."""
    if _ip(text):
        raise ValueError(f"{text!r} is an IP address; SNI carries a DNS name (use subject_alt_names for an IP)")
    if not _dns_name(text):
        raise ValueError(f"{text!r} is not a DNS name like accounts.internal")
    return text.lower()


def subject_alt_name(text: str) -> str:
    """A `Value` conversion: a DNS name, `*.` and a DNS name (any one label in its place), or an IP address."""
    if _ip(text):
        return str(ipaddress.ip_address(text))
    if not _dns_name(text.removeprefix("*.")):
        raise ValueError(f"{text!r} is neither a DNS name (accounts.internal, or *.accounts.internal for any "
                         "one label in front) nor an IP address")
    return text.lower()


def read_service_tls(f: Fields, problem: Problem, read: list[FileStamp], clock: Clock = now) -> UpstreamTls | None:
    """The checked `tls:` of a service (`f` is its complete `tls` fields), or None after reporting.
    Each file tried is added to `read`, good or bad: a fix to a bad one must be noticed too."""
    files = TlsFiles(f, problem, clock)
    ca = files.bundle("ca")
    ok = ca is not None
    pair = None
    if "certificate" in f and "key" in f:
        pair = files.pair("certificate", "key")
        ok = ok and pair is not None
    for given, missing, what in (("certificate", "key", "the private key of the client certificate"),
                                 ("key", "certificate", "the client certificate of the key")):
        if given in f and missing not in f:
            problem(f"{given} needs {missing}, {what}: give both (mTLS) or neither", f.at(given), f.path_of(given))
            ok = False
    read.extend(files.stamps)
    if "server_name" not in f and "subject_alt_names" not in f:
        problem("give server_name, the DNS name the hosts' certificates carry (also sent as SNI), or "
                "subject_alt_names: endpoints are IP addresses, there is no name to verify them by",
                f.loc, f.path_of("server_name"))
        ok = False
    if not ok or ca is None:
        return None
    names = tuple(dict.fromkeys(got.value for got in f.get("subject_alt_names", [])))
    chain, key = pair if pair is not None else (None, None)
    return UpstreamTls(ca, f.get("server_name", ""), names, chain, key, tuple(files.stamps))
