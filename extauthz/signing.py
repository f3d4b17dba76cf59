"""Issue tokens: key generation, public JWK export, and compact JWS signing.

Used by the tests, by `pavilion token` and by the demo; never on the request path. Signing is
done with `cryptography` directly so the output matches exactly what verify.py checks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from extauthz.jwk import EC_HALF_SIZE, hash_for, rsa_padding
from extauthz.tokens import b64url_encode

__all__ = ["PrivateKey", "encode_jws", "generate_key", "jwk_thumbprint", "load_private_key", "private_key_pem",
           "public_jwk", "sign", "sign_token"]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey

_CURVES: dict[str, ec.EllipticCurve] = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}


def _b64_uint(value: int, size: int | None = None) -> str:
    length = size if size is not None else max(1, (value.bit_length() + 7) // 8)
    return b64url_encode(value.to_bytes(length, "big"))


def public_jwk(key: PrivateKey | Any, *, kid: str | None = None, alg: str | None = None) -> dict[str, Any]:
    """The public JWK of a private or public key, with `use: sig`, and kid/alg when given."""
    public = key.public_key() if hasattr(key, "private_bytes") else key
    jwk: dict[str, Any]
    if isinstance(public, rsa.RSAPublicKey):
        rsa_numbers = public.public_numbers()
        jwk = {"kty": "RSA", "n": _b64_uint(rsa_numbers.n), "e": _b64_uint(rsa_numbers.e)}
    elif isinstance(public, ec.EllipticCurvePublicKey):
        crv, size = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48),
                     "secp521r1": ("P-521", 66)}.get(public.curve.name, (public.curve.name, 0))
        numbers = public.public_numbers()
        jwk = {"kty": "EC", "crv": crv, "x": _b64_uint(numbers.x, size or None),
               "y": _b64_uint(numbers.y, size or None)}
    elif isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        crv = "Ed25519" if isinstance(public, ed25519.Ed25519PublicKey) else "Ed448"
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk = {"kty": "OKP", "crv": crv, "x": b64url_encode(raw)}
    else:
        raise TypeError(f"no JWK form for {type(public).__name__}")
    jwk["use"] = "sig"
    if alg is not None:
        jwk["alg"] = alg
    if kid is not None:
        jwk["kid"] = kid
    return jwk


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint, a stable kid for a key."""
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}[jwk["kty"]]
    canonical = json.dumps({name: jwk[name] for name in required}, separators=(",", ":"), sort_keys=True)
    return b64url_encode(hashlib.sha256(canonical.encode()).digest())


def generate_key(alg: str, *, kid: str | None = None, rsa_bits: int = 2048) -> tuple[PrivateKey, dict[str, Any]]:
    """A new private key for `alg` and its public JWK (kid defaults to the RFC 7638 thumbprint)."""
    private: PrivateKey
    if alg.startswith(("RS", "PS")):
        private = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    elif alg in _CURVES:
        private = ec.generate_private_key(_CURVES[alg])
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"cannot generate a key for {alg!r}")
    jwk = public_jwk(private, alg=alg)
    jwk["kid"] = kid if kid is not None else jwk_thumbprint(jwk)
    return private, jwk


def sign(signing_input: bytes, private_key: PrivateKey, alg: str) -> bytes:
    """The JWS signature bytes of `signing_input` (ECDSA as fixed-size r||s)."""
    if alg.startswith(("RS", "PS")) and isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(signing_input, rsa_padding(alg), hash_for(alg))
    if alg in _CURVES and isinstance(private_key, ec.EllipticCurvePrivateKey):
        size = EC_HALF_SIZE[alg]
        r, s = decode_dss_signature(private_key.sign(signing_input, ec.ECDSA(hash_for(alg))))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg == "EdDSA" and isinstance(private_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return private_key.sign(signing_input)
    raise ValueError(f"cannot sign {alg} with a {type(private_key).__name__}")


def jws_signing_input(header: bytes, payload: bytes) -> bytes:
    """What a JWS signature covers: the two base64url segments joined by a dot (RFC 7515 section 5.1)."""
    return f"{b64url_encode(header)}.{b64url_encode(payload)}".encode("ascii")


def compact_jws(signing_input: bytes, signature: bytes) -> str:
    return f"{signing_input.decode('ascii')}.{b64url_encode(signature)}"


def encode_jws(header: bytes, payload: bytes, private_key: PrivateKey, alg: str) -> str:
    """A compact JWS over raw header and payload bytes (lets tests build odd but signed tokens)."""
    signing_input = jws_signing_input(header, payload)
    return compact_jws(signing_input, sign(signing_input, private_key, alg))


def sign_token(claims: Mapping[str, Any], private_key: PrivateKey, alg: str, kid: str | None,
               headers: Mapping[str, Any] | None = None) -> str:
    """A signed compact JWT. `headers` adds or overrides header parameters; a None value removes one."""
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    for name, value in (headers or {}).items():
        if value is None:
            header.pop(name, None)
        else:
            header[name] = value
    return encode_jws(json.dumps(header, separators=(",", ":")).encode(),
                      json.dumps(dict(claims), separators=(",", ":")).encode(), private_key, alg)


def private_key_pem(private_key: PrivateKey) -> bytes:
    return private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())


def load_private_key(pem: bytes, password: bytes | None = None) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=password)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
                      | ed448.Ed448PrivateKey):
        raise ValueError(f"{type(key).__name__} cannot sign JWTs")
    return key
