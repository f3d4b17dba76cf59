"""DPoP proofs and bindings as a client makes them (RFC 9449 section 4.2), for `pavilion dpop-proof`,
`pavilion token --dpop-key` and the tests; never on the request path."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from extauthz.dpop_proof import access_token_hash
from extauthz.signing import PrivateKey, encode_jws, jwk_thumbprint, public_jwk

__all__ = ["key_thumbprint", "make_proof", "proof_algorithm", "proof_jwk"]

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def proof_algorithm(private: PrivateKey) -> str:
    """The algorithm a proof signed with `private` uses: ES256/384/512 by curve, PS256 for RSA, EdDSA."""
    if isinstance(private, ec.EllipticCurvePrivateKey):
        alg = _EC_ALGORITHMS.get(private.curve.name)
        if alg is None:
            raise ValueError(f"curve {private.curve.name} cannot sign a DPoP proof")
        return alg
    if isinstance(private, rsa.RSAPrivateKey):
        return "PS256"
    if isinstance(private, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return "EdDSA"
    raise ValueError(f"a {type(private).__name__} cannot sign a DPoP proof")


def proof_jwk(private: PrivateKey) -> dict[str, Any]:
    """The public JWK a proof carries: the key's required members only."""
    jwk = public_jwk(private)
    jwk.pop("use", None)
    return jwk


def key_thumbprint(private: PrivateKey) -> str:
    """The `cnf.jkt` of a token bound to `private`'s public key (RFC 7638 SHA-256 thumbprint)."""
    return jwk_thumbprint(proof_jwk(private))


def make_proof(private: PrivateKey, *, method: str, url: str, access_token: str | None = None,
               alg: str | None = None, iat: float | None = None, jti: str | None = None,
               header: Mapping[str, Any] | None = None, claims: Mapping[str, Any] | None = None) -> str:
    """A signed proof for one request. `header`/`claims` add or replace members (None removes one), for tests."""
    alg = alg or proof_algorithm(private)
    head: dict[str, Any] = {"typ": "dpop+jwt", "alg": alg, "jwk": proof_jwk(private)}
    body: dict[str, Any] = {"jti": jti or uuid.uuid4().hex, "htm": method, "htu": url,
                            "iat": int(time.time() if iat is None else iat)}
    if access_token is not None:
        body["ath"] = access_token_hash(access_token)
    for target, changes in ((head, header), (body, claims)):
        for name, value in (changes or {}).items():
            if value is None:
                target.pop(name, None)
            else:
                target[name] = value
    return encode_jws(json.dumps(head, separators=(",", ":")).encode(),
                      json.dumps(body, separators=(",", ":")).encode(), private, alg)
