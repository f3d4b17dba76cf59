"""A test identity provider: keys, JWK Sets, and tokens, good or deliberately broken.

Signing itself lives in extauthz/signing.py (shared with `pavilion token` and the demo); this
module adds the test conveniences: cached keys (RSA generation is slow), default claims, and
builders for tokens no honest issuer would produce.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

from extauthz.keys import KeySet, key_set_for
from extauthz.signing import PrivateKey, encode_jws, generate_key, sign_token
from extauthz.tenant import JwksSource, Tenant
from extauthz.tokens import b64url_encode

ISSUER = "https://idp.acme.test"
AUDIENCE = "accounts-api"
DROP = object()   # as a claim value in Issuer.claims/token: leave the claim out


@functools.cache
def cached_key(alg: str, name: str = "main", rsa_bits: int = 2048) -> tuple[PrivateKey, dict[str, Any]]:
    """One key per (alg, name) for the whole test run; the kid is `<name>-<alg>`."""
    return generate_key(alg, kid=f"{name}-{alg}", rsa_bits=rsa_bits)


@dataclass
class Issuer:
    issuer: str = ISSUER
    audience: str = AUDIENCE
    algs: tuple[str, ...] = ("RS256", "ES256")
    name: str = "main"
    keys: dict[str, tuple[PrivateKey, dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for alg in self.algs:
            self.keys[alg] = cached_key(alg, self.name)

    def kid(self, alg: str = "RS256") -> str:
        return str(self.keys[alg][1]["kid"])

    def private(self, alg: str = "RS256") -> PrivateKey:
        return self.keys[alg][0]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [jwk for _, jwk in self.keys.values()]}

    def claims(self, now: float | None = None, **overrides: Any) -> dict[str, Any]:
        now = time.time() if now is None else now
        claims: dict[str, Any] = {"iss": self.issuer, "aud": self.audience, "sub": "user-1", "jti": "jti-1",
                                  "iat": int(now), "exp": int(now) + 300}
        for name, value in overrides.items():
            if value is DROP:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def token(self, alg: str = "RS256", *, now: float | None = None, kid: str | object | None = ...,
              headers: dict[str, Any] | None = None, **claims: Any) -> str:
        """A token signed by this issuer's `alg` key; `kid=None` leaves the kid out, DROP removes a claim."""
        key_id = self.kid(alg) if kid is ... else kid
        return sign_token(self.claims(now, **claims), self.private(alg), alg,
                          key_id if isinstance(key_id, str) else None, headers)

    def raw_token(self, header: str | bytes, payload: str | bytes, alg: str = "RS256") -> str:
        """A validly signed token over exact header and payload text (duplicate keys, odd JSON...)."""
        as_bytes = [part.encode() if isinstance(part, str) else part for part in (header, payload)]
        return encode_jws(as_bytes[0], as_bytes[1], self.private(alg), alg)

    def tenant(self, tenant_id: str = "acme", **overrides: Any) -> Tenant:
        settings: dict[str, Any] = {"id": tenant_id, "issuer": self.issuer, "audiences": (self.audience,),
                                    "algorithms": self.algs, "jwks": JwksSource.of_keys(self.jwks()["keys"])}
        settings.update(overrides)
        return Tenant(**settings)

    def key_set(self, tenant: Tenant | None = None) -> KeySet:
        return key_set_for(tenant or self.tenant())


def hmac_token(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """An HS256 token: with an RSA public key PEM as `secret` it is the classic alg-confusion attack."""
    signing_input = f"{b64url_encode(json.dumps(header).encode())}.{b64url_encode(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url_encode(mac)}"


def unsigned_token(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    return f"{b64url_encode(json.dumps(header).encode())}.{b64url_encode(json.dumps(claims).encode())}.{signature}"


def padded(segment: str) -> str:
    return segment + "=" * (-len(segment) % 4)


def std_b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def replace_part(token: str, index: int, new: str) -> str:
    parts = token.split(".")
    parts[index] = new
    return ".".join(parts)
