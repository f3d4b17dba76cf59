"""Public JWKs turned into `cryptography` key objects once, at load, with unsafe keys dropped.

Dropped (and logged by kid, never with key material): symmetric keys, keys carrying private
parts, RSA under 2048 bits or with an odd-sized exponent, EC keys off the NIST curves or whose
`alg` names another curve, keys not meant for signatures, and keys with an `alg` we do not accept.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey

MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
MAX_RSA_EXPONENT_BITS = 32  # a huge public exponent makes every verify as slow as a private-key operation

EC_CURVES: dict[str, tuple[type[ec.EllipticCurve], int]] = {
    "P-256": (ec.SECP256R1, 32), "P-384": (ec.SECP384R1, 48), "P-521": (ec.SECP521R1, 66),
}
# Which key an algorithm needs: (kty, crv or None for any).
ALG_KEY: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None), "RS384": ("RSA", None), "RS512": ("RSA", None),
    "PS256": ("RSA", None), "PS384": ("RSA", None), "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
}
# Size in bytes of each half of a JWS ECDSA signature (r || s, RFC 7518 3.4).
EC_HALF_SIZE = {"ES256": 32, "ES384": 48, "ES512": 66}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")


def hash_for(alg: str) -> hashes.HashAlgorithm:
    """The digest of an RS/PS/ES algorithm (its last three characters)."""
    return _HASHES[alg[2:]]()


def rsa_padding(alg: str) -> padding.AsymmetricPadding:
    """PKCS#1 v1.5 for RS*, PSS with MGF1 and a salt as long as the digest for PS* (RFC 7518 3.5)."""
    if alg.startswith("RS"):
        return padding.PKCS1v15()
    return padding.PSS(mgf=padding.MGF1(hash_for(alg)), salt_length=hash_for(alg).digest_size)


class RejectedKey(ValueError):
    """A JWK that is not loaded; the message says why and never contains key material."""


@dataclass(frozen=True)
class Key:
    kid: str | None
    kty: str   # RSA | EC | OKP
    alg: str | None
    crv: str | None
    public_key: PublicKey

    def accepts(self, alg: str) -> bool:
        """Whether a token signed with `alg` may be checked with this key (alg confusion guard)."""
        need = ALG_KEY.get(alg)
        if need is None or need[0] != self.kty:
            return False
        if need[1] is not None and need[1] != self.crv:
            return False
        return self.alg is None or self.alg == alg


def _b64_int(jwk: Mapping[str, Any], name: str) -> int:
    return int.from_bytes(_b64_bytes(jwk, name), "big")


def _b64_bytes(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise RejectedKey(f"member {name} is missing or not a string")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise RejectedKey(f"member {name} is not base64url") from exc


def parse_jwk(jwk: Mapping[str, Any]) -> Key:
    """A verification key from one public JWK, or RejectedKey naming the rule it breaks."""
    kty = jwk.get("kty")
    kid = jwk.get("kid")
    alg = jwk.get("alg")
    if kid is not None and not isinstance(kid, str):
        raise RejectedKey("kid is not a string")
    if kty == "oct":
        raise RejectedKey("symmetric key (kty oct)")
    if kty not in ("RSA", "EC", "OKP"):
        raise RejectedKey(f"unsupported kty {kty!r}" if isinstance(kty, str) else "kty is missing")
    if any(name in jwk for name in _PRIVATE_MEMBERS):
        raise RejectedKey("carries private key material")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise RejectedKey(f"use is {use!r}, not sig")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise RejectedKey("key_ops does not include verify")
    if alg is not None and (not isinstance(alg, str) or alg not in ALG_KEY):
        raise RejectedKey(f"alg {alg!r} is not accepted" if isinstance(alg, str) else "alg is not a string")
    key: PublicKey
    crv: str | None
    if kty == "RSA":
        key = _rsa(jwk)
        crv = None
    elif kty == "EC":
        crv, key = _ec(jwk)
    else:
        crv, key = _okp(jwk)
    loaded = Key(kid=kid, kty=kty, alg=alg, crv=crv, public_key=key)
    if alg is not None and not loaded.accepts(alg):
        raise RejectedKey(f"alg {alg} does not match the key ({kty}{' ' + crv if crv else ''})")
    return loaded


def _rsa(jwk: Mapping[str, Any]) -> rsa.RSAPublicKey:
    n = _b64_int(jwk, "n")
    e = _b64_int(jwk, "e")
    if n.bit_length() < MIN_RSA_BITS:
        raise RejectedKey(f"RSA key of {n.bit_length()} bits is under {MIN_RSA_BITS}")
    if n.bit_length() > MAX_RSA_BITS:
        raise RejectedKey(f"RSA key of {n.bit_length()} bits is over {MAX_RSA_BITS}")
    if e.bit_length() > MAX_RSA_EXPONENT_BITS:
        raise RejectedKey("RSA public exponent is too large")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise RejectedKey("invalid RSA public key") from exc


def _ec(jwk: Mapping[str, Any]) -> tuple[str, ec.EllipticCurvePublicKey]:
    crv = jwk.get("crv")
    if not isinstance(crv, str) or crv not in EC_CURVES:
        raise RejectedKey(f"EC curve {crv!r} is not P-256, P-384 or P-521")
    curve, size = EC_CURVES[crv]
    x, y = _b64_bytes(jwk, "x"), _b64_bytes(jwk, "y")
    if len(x) != size or len(y) != size:
        raise RejectedKey(f"EC coordinates have the wrong length for {crv}")
    try:
        key = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve()).public_key()
    except ValueError as exc:  # not a point on the curve
        raise RejectedKey("invalid EC public key") from exc
    return crv, key


def _okp(jwk: Mapping[str, Any]) -> tuple[str, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey]:
    crv = jwk.get("crv")
    x = _b64_bytes(jwk, "x")
    try:
        if crv == "Ed25519" and len(x) == 32:
            return crv, ed25519.Ed25519PublicKey.from_public_bytes(x)
        if crv == "Ed448" and len(x) == 57:
            return crv, ed448.Ed448PublicKey.from_public_bytes(x)
    except ValueError as exc:
        raise RejectedKey("invalid OKP public key") from exc
    raise RejectedKey(f"OKP curve {crv!r} with a {len(x)}-byte key is not Ed25519 or Ed448")


@dataclass(frozen=True)
class LoadedKeys:
    keys: tuple[Key, ...]
    dropped: tuple[tuple[str | None, str], ...]   # (kid, why) of every JWK left out


def parse_jwk_set(doc: object, *, max_keys: int) -> LoadedKeys:
    """Usable keys of a JWK Set document; ValueError when the document itself is unusable."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
        raise ValueError("not a JWK Set (an object with a keys array)")
    jwks: list[Any] = doc["keys"]
    if len(jwks) > max_keys:
        raise ValueError(f"JWK Set has {len(jwks)} keys, more than the cap of {max_keys}")
    return parse_jwks(jwks)


def parse_jwks(jwks: Iterable[Any]) -> LoadedKeys:
    keys: list[Key] = []
    dropped: list[tuple[str | None, str]] = []
    for jwk in jwks:
        kid = jwk.get("kid") if isinstance(jwk, Mapping) else None
        kid = kid if isinstance(kid, str) else None
        if not isinstance(jwk, Mapping):
            dropped.append((None, "not a JSON object"))
            continue
        try:
            keys.append(parse_jwk(jwk))
        except RejectedKey as exc:
            dropped.append((kid, str(exc)))
    return LoadedKeys(tuple(keys), tuple(dropped))
