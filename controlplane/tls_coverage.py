"""Does a TLS listener's certificate carry the names its routes answer? A route for `api.example.org` on a
listener whose certificate names only `*.example.com` loads and is served, but every client that checks
the name (browsers, curl, any HTTP library) refuses the connection. `pavilion validate` and
`pavilion plan` say so before it is served.

A listener shows one certificate to every host (no SNI selection); with `tls.regions`, one per region. Names are
compared as RFC 6125 clients do: DNS SANs only (never the subject CN), case-insensitive, and `*.x`
stands for exactly one label. Route hosts that are patterns themselves cannot be checked name by name:
`*` and `x.*` are skipped, and `*.x` is covered by the certificate's own `*.x`.
"""

from __future__ import annotations

from cryptography import x509

from controlplane.config.model import Config, Listener
from pavilion.pem_files import pem_certificates

__all__ = ["certificate_names", "covers", "host_coverage_warnings"]


def certificate_names(chain: bytes) -> tuple[str, ...]:
    """The DNS SANs of the chain's leaf (its first certificate), lower-cased."""
    certificates = pem_certificates(chain)
    if not certificates:
        return ()
    try:
        san = certificates[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(name.lower() for name in san.get_values_for_type(x509.DNSName))


def covers(names: tuple[str, ...], host: str) -> bool | None:
    """Whether a certificate with DNS SANs `names` is valid for `host`; None when `host` is a pattern that
    cannot be checked name by name."""
    host = host.lower()
    if host == "*" or host.endswith(".*"):
        return None
    if host.startswith("*."):
        return host in names
    if "*" in host:
        return None  # an Envoy suffix pattern such as *-api.example.com
    if host in names:
        return True
    label, _, rest = host.partition(".")
    return bool(label and rest) and f"*.{rest}" in names


def host_coverage_warnings(config: Config) -> list[str]:
    """One line per route host that no certificate of its TLS listener names, at the route's entry.

    With `tls.regions` a host counts as covered when one region's certificate (or the default) names it:
    `eu.api.example` named by eu-west's certificate alone is the point of certificates per region
    (DNS sends that name's clients to eu-west)."""
    names_of = {item.name: _names_by_region(item) for item in config.listeners if item.tls is not None}
    found = []
    for route in config.routes:
        by_region = names_of.get(route.listener)
        if by_region is None:
            continue
        for host in route.hosts:
            if all(covers(names, host) is False for names in by_region.values()):
                found.append(f"{route.source}: warning: route {route.name} answers host {host}, which "
                             f"{_whose(route.listener, by_region)}: clients that verify the name will refuse the "
                             "connection")
    return found


def _names_by_region(item: Listener) -> dict[str, tuple[str, ...]]:
    """The DNS names of each certificate of the listener: "" for the default, else the region."""
    tls = item.tls
    if tls is None:
        return {}
    found = {"": certificate_names(tls.certificate_chain)} if tls.certificate_chain else {}
    found.update((entry.region, certificate_names(entry.certificate_chain)) for entry in tls.regions)
    return found


def _whose(listener: str, by_region: dict[str, tuple[str, ...]]) -> str:
    if list(by_region) == [""]:
        return f"the certificate of listener {listener} does not name ({_shown(by_region[''])})"
    parts = "; ".join(f"{region or 'default'}: {_shown(names)}" for region, names in by_region.items())
    return f"no certificate of listener {listener} names ({parts})"


def _shown(names: tuple[str, ...]) -> str:
    if not names:
        return "it has no DNS names"
    return "it names " + ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
