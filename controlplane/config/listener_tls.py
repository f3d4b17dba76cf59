"""A listener's `tls:`: read the certificate, key and client CA files it names and check them, and
the per-region certificates of `tls.regions`.

The files are read at load time (relative to the YAML file that names them) so translation stays
pure: the model keeps the PEM bytes. The reading and checking is shared with a service's `tls:`
(controlplane.config.tls_files); the names below are kept here for the modules that import them.
"""

from __future__ import annotations

from collections.abc import Mapping

from controlplane.config.model import FileStamp, ListenerTls, RegionCertificate
from controlplane.config.shape import Fields, Got
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
from pavilion.errors import Location
from pavilion.yaml_nodes import suggest

__all__ = ["XFCC_ELEMENTS", "LoadErrors", "file_path", "file_stamp", "pem_certificates", "read_listener_tls",
           "referenced_files", "same_public_key", "stamps_now"]

# The parts of the client certificate Envoy can put in x-forwarded-client-cert (`Hash` it always adds).
XFCC_ELEMENTS = ("uri", "dns", "subject", "hash", "cert", "chain")


def read_listener_tls(f: Fields, problem: Problem, read: list[FileStamp], clock: Clock = now,
                      regions: Mapping[str, Location] | None = None) -> ListenerTls | None:
    """The checked `tls:` of a listener (`f` is its complete `tls` fields), or None after reporting.
    `regions`: the config's regions, which `tls.regions` entries must be and, without a default
    certificate, must all cover. Each file tried is added to `read`, good or bad: a fix to a bad one
    must be noticed too."""
    known = regions if regions is not None else {}
    files = TlsFiles(f, problem, clock)
    ok, pair = _default_pair(f, files, problem)
    mine: list[FileStamp] = []
    by_region = _region_certificates(f, problem, mine, clock, known)
    ok = by_region is not None and ok
    ca = files.bundle("client_ca") if "client_ca" in f else None
    mine[:0] = files.stamps
    read.extend(mine)
    ok = ("client_ca" not in f or ca is not None) and ok
    require = bool(f.get("require_client_certificate", False))
    for name in ("require_client_certificate", "forward_client_certificate"):
        if name in f and f.get(name) and "client_ca" not in f:
            what = ("the CA client certificates are verified against" if name == "require_client_certificate"
                    else "only a verified certificate is forwarded")
            problem(f"{name} needs client_ca, {what}", f.at(name), f.path_of(name))
            ok = False
    http3 = bool(f.get("http3", False))
    if http3 and "client_ca" in f:
        # Envoy 1.40's QUIC handshake verifies them, but that the certificate reaches RBAC, XFCC and ext_authz's
        # bound tokens over HTTP/3 as over TCP is not shown yet: mTLS must not quietly work differently on UDP.
        problem("http3 cannot be used with client_ca yet: that client certificates reach route checks, "
                "x-forwarded-client-cert and certificate-bound tokens over HTTP/3 as over TCP is not verified; "
                "serve mTLS clients on a listener without http3", f.at("http3"), f.path_of("http3"))
        ok = False
    forward = _forwarded(f, problem)
    ok = forward is not None and ok
    if by_region is not None and not {"certificate", "key"} & f.given:
        ok = _all_covered(f, by_region, known, problem) and ok
    if not ok or by_region is None or forward is None:
        return None
    chain, key = pair if pair is not None else (b"", b"")
    return ListenerTls(chain, key, ca, require, tuple(mine), regions=by_region, forward_client_certificate=forward,
                       http3=http3)


def http3_twin(listener: str) -> str:
    """The Envoy name of a listener's HTTP/3 (UDP) twin (controlplane/translate/_http3.py)."""
    return f"{listener}-h3"


def _default_pair(f: Fields, files: TlsFiles, problem: Problem) -> tuple[bool, tuple[bytes, bytes] | None]:
    """(good, the default (chain, key)): (True, None) when neither is given, (False, None) after reporting."""
    given = [name for name in ("certificate", "key") if name in f]
    if not given:
        return True, None
    if len(given) == 1:
        other = "key" if given[0] == "certificate" else "certificate"
        problem(f"{given[0]} needs {other}", f.at(given[0]), f.path_of(given[0]))
        return False, None
    pair = files.pair("certificate", "key")
    return pair is not None, pair


def _region_certificates(f: Fields, problem: Problem, read: list[FileStamp], clock: Clock,
                         known: Mapping[str, Location]) -> tuple[RegionCertificate, ...] | None:
    """The entries of `tls.regions`, each a region of the config with a good pair; None after reporting."""
    entries: dict[str, Got] = f.get("regions") or {}
    found: list[RegionCertificate] = []
    ok = True
    for region, got in entries.items():
        if region not in known:
            names = list(known)
            listed = f"; known: {', '.join(names)}" if names and len(names) <= 8 else ""
            problem(f"unknown region {region!r}{suggest(region, names) or listed} (add it to `regions`)",
                    got.loc, got.path)
            ok = False
        files = TlsFiles(got.value, problem, clock)
        pair = files.pair("certificate", "key")
        read.extend(files.stamps)
        if pair is None:
            ok = False
            continue
        found.append(RegionCertificate(region, *pair))
    return tuple(found) if ok else None


def _all_covered(f: Fields, by_region: tuple[RegionCertificate, ...], known: Mapping[str, Location],
                 problem: Problem) -> bool:
    """Without a default certificate, every region of the config needs an entry: an Envoy of a region left
    out would have no certificate to serve."""
    covered = {entry.region for entry in by_region}
    missing = [region for region in known if region not in covered]
    if not missing:
        return True
    plural = "s" if len(missing) > 1 else ""
    problem(f"region{plural} {', '.join(missing)} ha{'ve' if plural else 's'} no certificate: add "
            f"{'them' if plural else 'it'} to tls.regions, or give a default certificate and key", f.at("regions"),
            f.path_of("regions"))
    return False


def _forwarded(f: Fields, problem: Problem) -> tuple[str, ...] | None:
    items: list[Got] = f.get("forward_client_certificate") or []
    seen: dict[str, Location] = {}
    for got in items:
        if got.value in seen:
            problem(f"{got.value!r} is listed twice (first at {seen[got.value]})", got.loc, got.path)
            return None
        seen[got.value] = got.loc
    return tuple(seen)
