"""The key identity assertions are signed with, and the key set published for upstreams to verify them.

A key is loaded from a PEM file (here) or found in a PKCS#11 token (extauthz/pkcs11_signer.py); either
way it is a `SigningKey`: its algorithm (from the key: ES256 for P-256, ES384 for P-384, RS256 or PS256
for RSA of 2048 bits or more), its public JWK with the RFC 7638 thumbprint as kid, and a blocking `sign`.
`sign` is only ever called on the assertions' own signing thread (extauthz/identity_assertion.py).

`KeyRing` holds the current key and the public halves of the keys it replaced, each published until
every assertion it signed has expired (lifetime + skew after the swap), so a rotation never makes an
assertion in flight unverifiable.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from extauthz.identity_config import FileKeySource, IdentitySettings, KeySource, Pkcs11KeySource
from extauthz.signing import PrivateKey, jwk_thumbprint, load_private_key, public_jwk, sign
from pavilion.errors import BackendUnavailable, ConfigError
from pavilion.log import get_logger

__all__ = ["KeyRing", "SigningKey", "algorithm_for", "load_signing_key", "public_key_jwk"]

log = get_logger(__name__)

MIN_RSA_BITS = 2048
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384"}
# How long after a rotation the replaced key stays published beyond the assertion lifetime: upstreams'
# clocks and the time a request spends between Envoy and its upstream.
ROTATION_SKEW = 60.0


class SigningKey(Protocol):
    alg: str
    kid: str
    jwk: dict[str, Any]  # public only: kty, crv/x/y or n/e, use, alg, kid

    def sign(self, signing_input: bytes) -> bytes:
        """The JWS signature of `signing_input` (ECDSA as r||s); BackendUnavailable when the key cannot sign.
        Blocking: call it off the event loop."""
        ...

    def close(self) -> None: ...


def algorithm_for(public: Any, wanted: str | None, what: str) -> str:
    """The JWS algorithm of a public key; ConfigError naming `what` for a key that cannot sign assertions."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        alg = _EC_ALGORITHMS.get(public.curve.name)
        if alg is None:
            raise ConfigError(f"{what}: EC curve {public.curve.name} is not supported (use P-256)")
        if wanted is not None:
            raise ConfigError(f"{what}: `algorithm: {wanted}` is for RSA keys; an EC key signs with {alg}")
        return alg
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < MIN_RSA_BITS:
            raise ConfigError(f"{what}: an RSA key of {public.key_size} bits is too small (at least {MIN_RSA_BITS})")
        return wanted or "RS256"
    raise ConfigError(f"{what}: a {type(public).__name__} cannot sign assertions (use an EC P-256 or RSA key)")


def public_key_jwk(public: Any, alg: str) -> dict[str, Any]:
    """The published JWK of a public key: `use: sig`, its alg, and its RFC 7638 thumbprint as kid."""
    jwk = public_jwk(public, alg=alg)
    jwk["kid"] = jwk_thumbprint(jwk)
    return jwk


class FileSigningKey:
    def __init__(self, private: PrivateKey, alg: str) -> None:
        self._private = private
        self.alg = alg
        self.jwk = public_key_jwk(private.public_key(), alg)
        self.kid: str = self.jwk["kid"]

    def sign(self, signing_input: bytes) -> bytes:
        try:
            return sign(signing_input, self._private, self.alg)
        except ValueError as exc:
            raise BackendUnavailable(f"signing with key {self.kid} failed: {type(exc).__name__}") from None

    def close(self) -> None:
        pass

    def __repr__(self) -> str:  # never the key itself
        return f"FileSigningKey(alg={self.alg}, kid={self.kid})"


def _file_key(source: FileKeySource, wanted: str | None) -> FileSigningKey:
    where = f"{source.where}: identity.key.file" if source.where.file else "identity.key.file"
    try:
        mode = os.stat(source.file).st_mode
        pem = Path(source.file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {source.file}: {exc.strerror}") from None
    try:
        private = load_private_key(pem)
    except (ValueError, TypeError) as exc:
        # The message of cryptography's loader names the format problem, never the key material.
        raise ConfigError(f"{where}: {source.file} is not an unencrypted PEM private key ({exc})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("identity_key_file_open_to_others", file=source.file, mode=oct(mode & 0o777),
                    detail="make it readable by this service's user only (chmod 600)")
    return FileSigningKey(private, algorithm_for(private.public_key(), wanted, f"{where}: {source.file}"))


def load_signing_key(settings: IdentitySettings) -> SigningKey:
    """The key `settings` names, loaded (file read, or token opened and the key found). Blocking; a
    ConfigError names the config location, the file or token, and what is wrong."""
    source: KeySource = settings.key
    if isinstance(source, Pkcs11KeySource):
        from extauthz.pkcs11_signer import Pkcs11SigningKey  # python-pkcs11 only where an HSM is used

        return Pkcs11SigningKey.open(source, settings.algorithm)
    return _file_key(source, settings.algorithm)


class KeyRing:
    """The current signing key and the replaced ones still published (public JWKs only)."""

    def __init__(self, current: SigningKey, clock: Callable[[], float] = time.time) -> None:
        self.current = current
        self._retired: list[tuple[dict[str, Any], float]] = []  # (jwk, published until)
        self._clock = clock

    def rotate(self, new: SigningKey, keep_for: float) -> SigningKey:
        """Sign with `new` from now on; the old key's public half stays published `keep_for` seconds.
        Returns the old key (its owner closes it once no signature is in progress)."""
        old, self.current = self.current, new
        now = self._clock()
        self._retired = [(jwk, until) for jwk, until in self._retired if until > now and jwk["kid"] != new.kid]
        if old.kid != new.kid:
            self._retired.append((old.jwk, now + keep_for))
        return old

    def jwks(self) -> dict[str, Any]:
        """The JWK Set to publish: the current key first, then the replaced keys not yet expired."""
        now = self._clock()
        keys = [self.current.jwk]
        keys += [jwk for jwk, until in self._retired if until > now and jwk["kid"] != self.current.kid]
        return {"keys": keys}
