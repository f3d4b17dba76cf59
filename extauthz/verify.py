"""Verify a bearer token for one tenant: strict parse, algorithm policy, signature, then claims.

Order matters for cost and for what a forger learns: the parse and the algorithm allow-list come
first (no key work), then the unverified `iss` must be the tenant's (so a token of another issuer
never triggers a key refetch here), then the signature, and only then the claims.

ECDSA signatures are malleable: (r, n - s) verifies as well as (r, s), so one token has two valid
spellings. Accepted on purpose (as every JOSE library does); anything keyed on a token must use
(issuer, jti) or the claims, never the token text, when uniqueness matters (revocation).

Every refusal is a TokenError with a stable `reason` (a metric label) and a `description` safe
for a WWW-Authenticate error_description: it never quotes token content.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from extauthz.jwk import EC_HALF_SIZE, Key, hash_for, rsa_padding
from extauthz.keys import KeySet
from extauthz.tenant import Tenant
from extauthz.tokens import ParsedToken, parse_token
from pavilion.errors import BadSignature, ExpiredToken, TokenError

__all__ = ["REASONS", "VerifiedToken", "check_claims", "check_signature", "unverified_issuer", "verify_parsed",
           "verify_token"]

# Every reason code this module (and tokens.py / keys.py below it) can raise.
REASONS = (
    "malformed", "oversize", "duplicate_member", "forbidden_header", "alg_not_allowed", "alg_key_mismatch",
    "unknown_kid", "bad_signature", "expired", "not_yet_valid", "issued_in_future", "lifetime_too_long",
    "wrong_issuer", "wrong_audience", "wrong_type", "missing_claim", "bad_claim",
)

# NumericDate bounds: 0 .. year 9999. Anything else is an attack or a bug, not a time.
MAX_NUMERIC_DATE = 253402300799



@dataclass(frozen=True)
class VerifiedToken:
    tenant_id: str
    issuer: str
    subject: str           # "" when the token has no sub
    claims: dict[str, Any]
    expires_at: float
    issued_at: float | None
    jti: str | None


def check_signature(key: Key, alg: str, signing_input: bytes, signature: bytes) -> None:
    """BadSignature unless `signature` is `alg` over `signing_input` with `key` (key type already bound)."""
    public = key.public_key
    try:
        if alg.startswith(("RS", "PS")) and isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, signing_input, rsa_padding(alg), hash_for(alg))
            return
        if alg in EC_HALF_SIZE and isinstance(public, ec.EllipticCurvePublicKey):
            size = EC_HALF_SIZE[alg]
            # JWS uses fixed-size r||s (RFC 7518 3.4), not DER: any other length is refused outright.
            if len(signature) != 2 * size:
                raise BadSignature("signature has the wrong length")
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            public.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hash_for(alg)))
            return
        if alg == "EdDSA" and isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            public.verify(signature, signing_input)
            return
    except InvalidSignature as exc:
        raise BadSignature("signature does not verify") from exc
    raise TokenError("the key cannot verify the token algorithm", reason="alg_key_mismatch")


def unverified_issuer(token: str, max_bytes: int) -> str | None:
    """The `iss` of a token that passes the strict parse, to pick its tenant. Never fetches anything.

    MalformedToken when the token fails the parse; None when it has no string `iss`.
    """
    iss = parse_token(token, max_bytes).claims.get("iss")
    return iss if isinstance(iss, str) else None


async def verify_token(token: str, tenant: Tenant, keys: KeySet, now: float) -> VerifiedToken:
    """The verified token, or a TokenError (or BackendUnavailable when the tenant has no keys yet)."""
    return await verify_parsed(parse_token(token, tenant.max_token_bytes), tenant, keys, now)


async def verify_parsed(parsed: ParsedToken, tenant: Tenant, keys: KeySet, now: float) -> VerifiedToken:
    alg = parsed.alg
    if not tenant.allows_algorithm(alg):
        raise TokenError("token algorithm is not allowed for this issuer", reason="alg_not_allowed")
    claims = parsed.claims
    issuer = claims.get("iss")
    if issuer is None:
        raise TokenError("token has no iss", reason="missing_claim")
    if issuer != tenant.issuer:
        raise TokenError("token issuer is not accepted here", reason="wrong_issuer")
    key = await keys.key_for(parsed.kid, alg)
    if not key.accepts(alg):   # key_for already filters; kept so a KeySet bug cannot cause alg confusion
        raise TokenError("the key cannot verify the token algorithm", reason="alg_key_mismatch")
    check_signature(key, alg, parsed.signing_input, parsed.signature)
    _check_type(parsed.header, tenant)
    return check_claims(claims, tenant, now)


def _check_type(header: dict[str, Any], tenant: Tenant) -> None:
    if tenant.token_type is None:
        return
    typ = header.get("typ")
    if typ is None:
        raise TokenError(f"token has no typ; {tenant.token_type} is required", reason="wrong_type")
    if _media_type(typ) != _media_type(tenant.token_type):
        raise TokenError(f"token typ is not {tenant.token_type}", reason="wrong_type")


def _media_type(value: str) -> str:
    # RFC 7515 4.1.9 / RFC 8725 3.11: compare case-insensitively, "application/" may be omitted.
    value = value.lower()
    return value[len("application/"):] if value.startswith("application/") else value


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        if name in claims:
            raise TokenError(f"{name} is null", reason="bad_claim")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError(f"{name} is not a number", reason="bad_claim")
    # Also refuses 1e400, which Python's json reads as inf (NaN and Infinity are refused at parse).
    if not 0 <= value <= MAX_NUMERIC_DATE:
        raise TokenError(f"{name} is out of range", reason="bad_claim")
    return float(value)


def check_claims(claims: dict[str, Any], tenant: Tenant, now: float) -> VerifiedToken:
    """The time, audience, sub and jti rules of a token's claims (a JWT's, or an introspection answer's)."""
    skew = tenant.clock_skew
    exp = _numeric_date(claims, "exp")
    nbf = _numeric_date(claims, "nbf")
    iat = _numeric_date(claims, "iat")
    if exp is None:
        raise TokenError("token has no exp", reason="missing_claim")
    if exp <= now - skew:
        raise ExpiredToken("token has expired")
    if nbf is not None and nbf > now + skew:
        raise TokenError("token is not valid yet", reason="not_yet_valid")
    if iat is not None and iat > now + skew:
        raise TokenError("token was issued in the future", reason="issued_in_future")
    if exp - (iat if iat is not None else now) > tenant.max_lifetime:
        raise TokenError("token lifetime is longer than this issuer allows", reason="lifetime_too_long")
    _check_audience(claims, tenant)
    sub = claims.get("sub")
    if sub is not None and not isinstance(sub, str):
        raise TokenError("sub is not a string", reason="bad_claim")
    jti = claims.get("jti")
    if jti is not None and not isinstance(jti, str):
        raise TokenError("jti is not a string", reason="bad_claim")
    return VerifiedToken(tenant_id=tenant.id, issuer=tenant.issuer, subject=sub or "", claims=claims,
                         expires_at=exp, issued_at=iat, jti=jti)


def _check_audience(claims: dict[str, Any], tenant: Tenant) -> None:
    aud = claims.get("aud")
    if aud is None:
        raise TokenError("token has no aud", reason="missing_claim")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise TokenError("aud is not a string or an array of strings", reason="bad_claim")
    if not any(a in tenant.audiences for a in audiences):
        raise TokenError("token audience is not accepted here", reason="wrong_audience")

