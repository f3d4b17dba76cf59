"""An introspection answer (RFC 7662 section 2.2) to a `VerifiedToken`, under the tenant's rules.

Pure: no I/O. The answer is trusted only as far as these rules go:
- `active` must be exactly JSON `true` (not "true", not 1);
- `iss`, when present, must be the tenant's issuer;
- `token_type`, when present, must be a string and not `refresh_token` (a refresh token is not an access
  token, even when the IdP says it is active);
- then the claims are checked exactly as a JWT's are (verify.check_claims): `exp` required and a JSON
  number in the future (beyond clock skew), `nbf`/`iat` not in the future, `max_lifetime`, and `aud`:
  every tenant has audiences, so an answer without `aud` is refused like a JWT without one (the IdP did
  not say the token is meant for this API, and many IdPs introspect tokens for any client's API).

The resulting claims (all members but `active`) flow like a JWT's: `sub`, `scope`, `client_id`, `cnf`,
`jti`, `iat`, and whatever `claims_to_headers` names.
"""

from __future__ import annotations

from typing import Any

from extauthz.tenant import Tenant
from extauthz.verify import VerifiedToken, check_claims
from pavilion.errors import TokenError

__all__ = ["introspected_token"]


def introspected_token(answer: dict[str, Any], tenant: Tenant, now: float) -> VerifiedToken:
    """The verified token the answer describes; TokenError (token_inactive, wrong_issuer, ...) when refused."""
    if answer.get("active") is not True:
        raise TokenError("the token is not active", reason="token_inactive")
    if "iss" in answer and answer["iss"] != tenant.issuer:
        raise TokenError("token issuer is not accepted here", reason="wrong_issuer")
    if "token_type" in answer:
        token_type = answer["token_type"]
        if not isinstance(token_type, str):
            raise TokenError("token_type is not a string", reason="bad_claim")
        if token_type.lower().replace("-", "_") == "refresh_token":
            raise TokenError("a refresh token is not an access token", reason="wrong_type")
    claims = {name: value for name, value in answer.items() if name != "active"}
    return check_claims(claims, tenant, now)
