"""The request side of DPoP (RFC 9449 section 7.1): `Authorization: DPoP <token>` with one `DPoP: <proof>`
header, read from Envoy's CheckRequest, and the request URL a proof's `htu` must name.

Envoy joins a repeated header with commas, and neither a token nor a proof can hold one: a comma means
two credentials or two proofs, a malformed request (400).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from extauthz import decision
from extauthz.decision import Outcome
from extauthz.dpop_proof import normalise_url
from extauthz.tenant import DEFAULT_DPOP_ALGORITHMS
from extauthz.tenant_set import Tenants

__all__ = ["PROOF_HEADER", "dpop_credentials", "dpop_only_challenge", "is_dpop", "request_method", "request_url"]

PROOF_HEADER = "dpop"
# An authority (RFC 3986 reg-name or IP literal, and a port): no "/", "?", "#", "@" that would move what
# follows the host into another part of the URL compared with a proof's htu.
_AUTHORITY = re.compile(r"[A-Za-z0-9.\-_~!$&'()*+;=:\[\]%]+")


def is_dpop(authorization: str) -> bool:
    """Whether an Authorization value uses the DPoP scheme (scheme names are case-insensitive)."""
    return authorization[:5].lower() == "dpop "


def _bad_request(reason: str, description: str) -> Outcome:
    return decision.as_dpop(decision.invalid_request(reason, description), DEFAULT_DPOP_ALGORITHMS)


def dpop_credentials(authorization: str, headers: Mapping[str, str], path: str) -> tuple[str, str] | Outcome:
    """(access token, proof) of a DPoP request, or the refusal: 400 for two credentials or proofs, an empty or
    malformed token; 401 invalid_dpop_proof when the proof is missing."""
    token = authorization.strip().partition(" ")[2].strip(" ")
    if "," in token:
        return _bad_request("multiple_credentials", "more than one credential")
    query = path.partition("?")[2]
    if "access_token" in query and any(name == "access_token" for name, _ in parse_qsl(query, keep_blank_values=True)):
        return _bad_request("multiple_credentials", "more than one credential")
    if not token:
        return _bad_request("empty_credential", "the DPoP access token is empty")
    if not decision.TOKEN68.fullmatch(token):
        return _bad_request("malformed_credential", "the access token has characters a token cannot hold")
    proof = headers.get(PROOF_HEADER)
    if proof is None or not proof.strip():
        return decision.invalid_dpop_proof("dpop_proof_missing", "the request has no DPoP proof",
                                           DEFAULT_DPOP_ALGORITHMS)
    if "," in proof:
        return _bad_request("dpop_multiple_proofs", "more than one DPoP proof")
    return token, proof


def dpop_only_challenge(missing: Outcome, tenants: Tenants, context_extensions: Mapping[str, str]) -> Outcome | None:
    """For a request without credentials on a route whose tenants all require DPoP: the same refusal with a
    DPoP challenge naming their proof algorithms (RFC 9449 section 7.1) instead of a Bearer one; None otherwise."""
    route = decision.route_tenants(context_extensions)
    found = [tenants.get(t) for t in route] if route else []
    if not found or not all(t is not None and t.dpop.required for t in found):
        return None
    algs = tuple(dict.fromkeys(alg for t in found if t is not None for alg in t.dpop.algorithms))
    return decision.as_dpop(missing, algs)


def request_method(attributes: Any) -> str:
    return str(attributes.request.http.method) if attributes is not None else ""


def request_url(attributes: Any) -> tuple[str | None, bool]:
    """The normalised scheme://host[:port]/path of the request Envoy asks about (query and fragment left out),
    None when Envoy sent no usable scheme or host; and whether the host carried its port.

    The gateway's listeners strip the port from the Host header before any filter runs
    (`strip_any_host_port`, so `hosts:` match whatever port the client used): then the port of a proof's
    `htu` cannot be compared, and only scheme, host and path are."""
    if attributes is None:
        return None, True
    http = attributes.request.http
    return _url(http.scheme, http.host, http.path.partition("?")[0].partition("#")[0])


@functools.lru_cache(maxsize=4096)
def _url(scheme: str, host: str, path: str) -> tuple[str | None, bool]:
    # Few distinct (scheme, host, path) triples in real traffic; bounded for the rest.
    if not scheme or not _AUTHORITY.fullmatch(host):
        return None, True
    url = normalise_url(f"{scheme}://{host}{path}")
    return url, ":" in host.rpartition("]")[2]
