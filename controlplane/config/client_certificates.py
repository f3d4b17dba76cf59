"""A route's `auth.client_certificates`: which client certificates (machine clients over mTLS) may
call it, named by a subject alternative name the certificate carries, as Istio's `principals` are.

An entry is a URI SAN (`spiffe://pavilion.example/ns/partners/sa/billing`), a URI SAN prefix ending
in `/*` (`spiffe://pavilion.example/ns/partners/*`: anything under that path), or a DNS SAN, exact
(`billing.partners.example`) or with `*.` for any one label (`*.partners.example`). What holds
`://` is a URI, anything else a DNS name: a URI entry never matches a DNS SAN, nor the reverse.
Envoy enforces them (controlplane.translate._rbac); this module only reads the YAML's strings.
"""

from __future__ import annotations

import ipaddress
import re

from controlplane.config.model import ClientCertificate

__all__ = ["CLIENT_CERTIFICATE_PATTERN", "MAX_URI", "client_certificate"]

# What an editor can check: a URI with a scheme, or a DNS name with an optional `*.` (no space anywhere).
CLIENT_CERTIFICATE_PATTERN = r"^([A-Za-z][A-Za-z0-9+.-]*://[^\s*]+(/\*)?|(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*)$"
MAX_URI = 2048  # the SPIFFE ID limit, bytes
_SCHEME = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)", re.DOTALL)
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SPIFFE_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def client_certificate(text: str) -> ClientCertificate:
    """A `Value` conversion: the SAN an entry asks for, or ValueError saying what is wrong with it."""
    if _SPACE_OR_CONTROL.search(text):
        raise ValueError(f"{text!r} holds a space or control character")
    found = _SCHEME.fullmatch(text)
    if found is not None:
        return _uri(found["scheme"].lower(), found["rest"], text)
    if "/" in text or ":" in text:
        raise ValueError(f"{text!r} is neither a URI (scheme://..., like spiffe://example.org/ns/a/sa/b) "
                         "nor a DNS name")
    return _dns(text)


def _uri(scheme: str, rest: str, text: str) -> ClientCertificate:
    wildcard = rest.endswith("/*")
    body = rest[:-1] if wildcard else rest  # a prefix keeps its '/': .../partners/ never matches .../partnersX
    if "*" in body:
        raise ValueError(f"{text!r}: `*` may only end a URI, after a '/' (like spiffe://example.org/ns/partners/*), "
                         "for every URI under that path")
    if len(text.encode("utf-8")) > MAX_URI:
        raise ValueError(f"{text!r} is longer than {MAX_URI} bytes")
    authority, _, path = body.partition("/")
    if not authority:
        raise ValueError(f"{text!r} names no host or trust domain after {scheme}://")
    if scheme == "spiffe":
        _spiffe(authority, path, wildcard, text)
    return ClientCertificate("uri", f"{scheme}://{body}", wildcard)


def _spiffe(trust_domain: str, path: str, wildcard: bool, text: str) -> None:
    """The SPIFFE ID rules (SPIFFE-ID.md section 2): what a SPIFFE certificate cannot carry is a typo here."""
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise ValueError(f"{text!r}: a SPIFFE trust domain holds only lower-case letters, digits, '.', '-' and '_'")
    segments = path.split("/") if path else []
    if wildcard:
        segments = segments[:-1]  # the empty one after the last '/'
    for segment in segments:
        if segment in ("", ".", "..") or not _SPIFFE_SEGMENT.fullmatch(segment):
            raise ValueError(f"{text!r}: a SPIFFE ID's path segments are non-empty, not '.' or '..', and hold only "
                             "letters, digits, '.', '-' and '_' (no query, fragment or trailing '/')")


def _dns(text: str) -> ClientCertificate:
    wildcard = text.startswith("*.")
    name = text.removeprefix("*.")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise ValueError(f"{text!r} is an IP address: name a client by its certificate's URI SAN (a SPIFFE ID) or "
                         "DNS SAN")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        hint = " (`*` only as `*.` in front, for any one label)" if "*" in name else ""
        raise ValueError(f"{text!r} is not a DNS name like billing.partners.example{hint}")
    if wildcard and len(labels) < 2:
        raise ValueError(f"{text!r}: a `*.` name needs two labels or more after it, like *.partners.example")
    return ClientCertificate("dns", name.lower(), wildcard)
