"""Which tenant's IdP may be asked about a token the gateway cannot verify itself.

A token that is not a compact JWS (three non-empty base64url segments) is opaque: only its issuer can
say what it is. It is introspected by exactly one tenant, never tried at several:
- when the route names tenants (`context_extensions["tenant"]`), the one of them that has introspection;
- when the route names none, the one tenant of the whole config that has introspection.
Two or more candidates refuse the token (`introspection_ambiguous`) instead of trying each in turn:
sending a bearer token to an IdP that did not issue it hands that IdP a usable credential of another
tenant, and each extra try adds an IdP round trip to every refused token. A route that must accept
opaque tokens of two IdPs needs two routes (or one IdP). No candidate: the token is refused as
malformed, as before introspection existed.
"""

from __future__ import annotations

import re

from extauthz import decision
from extauthz.decision import Outcome
from extauthz.tenant import Tenant
from extauthz.tenant_set import Tenants

__all__ = ["is_compact_jws", "opaque_token_tenant"]

_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def is_compact_jws(token: str) -> bool:
    """True for a token shaped as a JWT (it goes through JWT verification, not introspection)."""
    return _COMPACT_JWS.fullmatch(token) is not None


def opaque_token_tenant(tenants: Tenants, route: tuple[str, ...] | None) -> Tenant | Outcome | None:
    """The tenant to introspect an opaque token with; a refusal when that is ambiguous; None when no tenant
    may (the caller then refuses the token as it refuses any malformed one)."""
    if route is None:
        candidates = tenants.introspecting
    else:
        candidates = tuple(tenant for name in dict.fromkeys(route)
                           if (tenant := tenants.get(name)) is not None and tenant.introspection is not None)
    if not candidates:
        return None
    if len(candidates) > 1:
        return decision.invalid_token("introspection_ambiguous",
                                      "opaque tokens are accepted here from more than one issuer")
    return candidates[0]
