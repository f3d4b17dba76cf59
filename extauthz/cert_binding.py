"""Certificate-bound tokens (RFC 8705 section 3): a token carrying `cnf: {"x5t#S256": THUMBPRINT}` is
valid only on a connection whose client certificate has that SHA-256 thumbprint. A stolen bound token
is useless without the client's private key.

Envoy hands ext_authz the client certificate of the TLS connection (`attributes.source.certificate`,
URL-encoded PEM) when its ext_authz filter has `include_peer_certificate: true`; the control plane
sets it on listeners that verify client certificates. Without a certificate a bound token is refused.

A DPoP key thumbprint (`jkt`, RFC 9449) is read here too and checked against the request's proof by
extauthz/dpop_check.py. A `cnf` this gateway cannot check (a raw `jwk`, a member that is not a non-empty
string, neither `x5t#S256` nor `jkt`) is refused at verification, never accepted as a bearer token: the
issuer meant the token for one key holder only.
Thumbprints are kept per certificate text, so a client's connection costs one PEM parse, not one per
request.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from extauthz import decision
from extauthz.decision import Outcome

__all__ = [
    "BINDING_MISMATCH", "BINDING_MISSING", "THUMBPRINT_MEMBER", "UnverifiableBinding", "binding_refusal",
    "certificate_thumbprint", "pem_thumbprint", "token_binding", "token_bindings",
]

THUMBPRINT_MEMBER = "x5t#S256"
DPOP_MEMBER = "jkt"
_MAX_THUMBPRINTS = 10_000
_thumbprints: dict[str, str | None] = {}

BINDING_MISSING = decision.invalid_token("certificate_missing",
                                         "the token is bound to a client certificate and none was presented")
BINDING_MISMATCH = decision.invalid_token("certificate_mismatch", "the token is bound to another client certificate")


class UnverifiableBinding(ValueError):
    """The token's `cnf` names no key this gateway can check."""


def token_binding(claims: dict[str, Any]) -> str | None:
    """The x5t#S256 thumbprint the token is bound to; None for a token not bound to a certificate;
    UnverifiableBinding for a `cnf` that names no key this gateway can check."""
    return token_bindings(claims)[0]


def token_bindings(claims: dict[str, Any]) -> tuple[str | None, str | None]:
    """(x5t#S256, jkt): the certificate and the DPoP key the token is bound to, None where it is not
    (both None: unbound). UnverifiableBinding for a `cnf` that is not an object holding at least one of
    them, or holding one that is not a non-empty string."""
    if "cnf" not in claims:
        return None, None
    cnf = claims["cnf"]
    if not isinstance(cnf, dict) or (THUMBPRINT_MEMBER not in cnf and DPOP_MEMBER not in cnf):
        raise UnverifiableBinding("the token is bound to a key this gateway cannot check")
    found: list[str | None] = []
    for member in (THUMBPRINT_MEMBER, DPOP_MEMBER):
        value = cnf.get(member)
        if member in cnf and (not isinstance(value, str) or not value):
            raise UnverifiableBinding("the token is bound to a key this gateway cannot check")
        # base64url without padding, as the certificate's and the proof key's thumbprints are written
        found.append(value.rstrip("=") if isinstance(value, str) else None)
    return found[0], found[1]


def pem_thumbprint(pem: bytes) -> str:
    """The x5t#S256 of the first certificate in `pem`: base64url(SHA-256(DER)), unpadded; ValueError when
    there is none."""
    certificate = x509.load_pem_x509_certificate(pem)
    digest = hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def certificate_thumbprint(encoded_pem: str) -> str | None:
    """base64url(SHA-256(DER)) of Envoy's URL-encoded PEM client certificate; None when there is none or
    it cannot be read."""
    if not encoded_pem:
        return None
    found = _thumbprints.get(encoded_pem, "")
    if found != "":
        return found
    try:
        thumbprint: str | None = pem_thumbprint(unquote(encoded_pem).encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        thumbprint = None
    if len(_thumbprints) >= _MAX_THUMBPRINTS:
        _thumbprints.clear()
    _thumbprints[encoded_pem] = thumbprint
    return thumbprint


def binding_refusal(bound_to: str, attributes: Any) -> Outcome | None:
    """The refusal when the connection's client certificate is not the one the token is bound to."""
    presented = certificate_thumbprint(attributes.source.certificate) if attributes is not None else None
    if presented is None:
        return BINDING_MISSING
    return None if presented == bound_to else BINDING_MISMATCH
