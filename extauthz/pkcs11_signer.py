"""Identity assertions signed inside a PKCS#11 token (an HSM, or SoftHSM2 in tests) with python-pkcs11.

The private key is found by its label and used by handle: it is never read, and a key generated with
CKA_EXTRACTABLE false and CKA_SENSITIVE true cannot be. The public key (an object with the same label;
an RSA private key's modulus and exponent do too) gives the published JWK and the algorithm.

The PIN is read from `pin_file` when the key is opened, used to log in, and not kept. A PKCS#11 call
blocks, and a session is not for concurrent use: every call here runs on the assertions' one signing
thread (extauthz/identity_assertion.py), this module's session included. A session the token lost
(an HSM restart) is opened again, at most once a second, for the same key (same kid) only.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from pathlib import Path
from typing import Any

import pkcs11
from asn1crypto.core import OctetString
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from extauthz.identity_config import Pkcs11KeySource
from extauthz.identity_keys import algorithm_for, public_key_jwk
from pavilion.errors import BackendUnavailable, ConfigError
from pavilion.log import get_logger

__all__ = ["Pkcs11SigningKey", "pkcs11_library"]

_CURVES: dict[bytes, ec.EllipticCurve] = {
    bytes.fromhex("06082a8648ce3d030107"): ec.SECP256R1(),  # OID 1.2.840.10045.3.1.7 (P-256)
    bytes.fromhex("06052b81040022"): ec.SECP384R1(),  # OID 1.3.132.0.34 (P-384)
}
_libraries: dict[str, Any] = {}
log = get_logger(__name__)


def pkcs11_library(module: str) -> Any:
    """The loaded PKCS#11 module at `module`, loaded once per process (C_Initialize is per process)."""
    library = _libraries.get(module)
    if library is None:
        if not Path(module).is_file():
            raise ConfigError(f"the PKCS#11 module {module} does not exist")
        try:
            library = _libraries[module] = pkcs11.lib(module)
        except p11.PKCS11Error as exc:
            raise ConfigError(f"cannot load the PKCS#11 module {module}: {type(exc).__name__}") from None
    return library


def read_pin(pin_file: str, where: str) -> str:
    try:
        pin = Path(pin_file).read_text(encoding="utf-8").strip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{where}: cannot read the PIN file {pin_file}: {reason}") from None
    if not pin:
        raise ConfigError(f"{where}: the PIN file {pin_file} is empty")
    return pin


def _public_key(session: Any, private: Any, label: str, what: str) -> Any:
    """The cryptography public key of the pair labelled `label`."""
    try:
        public = session.get_key(label=label, object_class=ObjectClass.PUBLIC_KEY)
    except p11.NoSuchKey:
        public = None
    except p11.MultipleObjectsReturned:
        raise ConfigError(f"{what}: several public keys carry this label") from None
    if private.key_type == KeyType.EC:
        if public is None:
            raise ConfigError(f"{what}: no public key with this label (the JWKS is made from it)")
        curve = _CURVES.get(bytes(public[Attribute.EC_PARAMS]))
        if curve is None:
            raise ConfigError(f"{what}: the key's curve is not supported (use P-256)")
        point = OctetString.load(bytes(public[Attribute.EC_POINT])).native
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    if private.key_type == KeyType.RSA:
        holder = public if public is not None else private
        modulus = int.from_bytes(holder[Attribute.MODULUS], "big")
        exponent = int.from_bytes(holder[Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    raise ConfigError(f"{what}: a {private.key_type.name} key cannot sign assertions (use EC P-256 or RSA)")


# Errors after which a new session may sign again: the HSM restarted, the token was re-inserted, the login lapsed.
_SESSION_LOST = (p11.SessionHandleInvalid, p11.SessionClosed, p11.DeviceRemoved, p11.TokenNotPresent,
                 p11.DeviceError, p11.UserNotLoggedIn, p11.KeyHandleInvalid, p11.ObjectHandleInvalid)
REOPEN_SECONDS = 1.0  # at most one new login a second: while the HSM is down, signatures fail fast


class Pkcs11SigningKey:
    def __init__(self, session: Any, private: Any, alg: str, public: Any,
                 source: Pkcs11KeySource | None = None, wanted: str | None = None) -> None:
        self._session = session
        self._private = private
        self._source, self._wanted = source, wanted
        self._reopened_at = 0.0
        self.alg = alg
        self.jwk = public_key_jwk(public, alg)
        self.kid: str = self.jwk["kid"]

    @classmethod
    def open(cls, source: Pkcs11KeySource, wanted: str | None) -> Pkcs11SigningKey:
        """Log in to the token and find the key; ConfigError naming the config location and what failed."""
        where = f"{source.where}: identity.key.pkcs11" if source.where.file else "identity.key.pkcs11"
        what = f"{where}: {source.describe()}"
        pin = read_pin(source.pin_file, where)
        try:
            library = pkcs11_library(source.module)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc.message}") from None
        try:
            token = library.get_token(token_label=source.token)
        except p11.NoSuchToken:
            raise ConfigError(f"{where}: no token labelled {source.token!r} in {source.module}") from None
        except p11.MultipleTokensReturned:
            raise ConfigError(f"{where}: several tokens are labelled {source.token!r}") from None
        try:
            session = token.open(user_pin=pin)
        except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange, p11.PinLocked, p11.PinExpired) as exc:
            raise ConfigError(f"{where}: the token {source.token!r} refused the PIN of {source.pin_file} "
                              f"({type(exc).__name__})") from None
        except p11.PKCS11Error as exc:
            raise ConfigError(f"{where}: cannot open the token {source.token!r}: {type(exc).__name__}") from None
        try:
            private = session.get_key(label=source.key, object_class=ObjectClass.PRIVATE_KEY)
            public = _public_key(session, private, source.key, what)
            return cls(session, private, algorithm_for(public, wanted, what), public, source, wanted)
        except p11.NoSuchKey:
            session.close()
            raise ConfigError(f"{what}: no private key with this label") from None
        except p11.MultipleObjectsReturned:
            session.close()
            raise ConfigError(f"{what}: several private keys carry this label") from None
        except (ConfigError, p11.PKCS11Error):
            session.close()
            raise

    def sign(self, signing_input: bytes) -> bytes:
        try:
            return self._sign(signing_input)
        except _SESSION_LOST as exc:
            if not self._reopen(type(exc).__name__):
                raise BackendUnavailable(f"the session with the token is lost ({type(exc).__name__}) and cannot "
                                         f"be opened again yet; key {self.kid}") from None
        except p11.PKCS11Error as exc:  # the token's error code only: nothing of the key or the data
            raise BackendUnavailable(f"the token refused to sign with key {self.kid}: {type(exc).__name__}") from None
        try:
            return self._sign(signing_input)
        except p11.PKCS11Error as exc:
            raise BackendUnavailable(f"the token refused to sign with key {self.kid}: {type(exc).__name__}") from None

    def _reopen(self, why: str) -> bool:
        """Log in again and find the same key (same kid): True when this key can sign again."""
        now = time.monotonic()
        if self._source is None or now - self._reopened_at < REOPEN_SECONDS:
            return False
        self._reopened_at = now
        try:
            fresh = Pkcs11SigningKey.open(self._source, self._wanted)
        except (ConfigError, p11.PKCS11Error) as exc:
            log.error("identity_token_reopen_failed", kid=self.kid, why=why, detail=str(exc))
            return False
        if fresh.kid != self.kid:  # the label now names another key: that is a rotation, not a reconnection
            fresh.close()
            log.error("identity_token_key_changed", kid=self.kid, found=fresh.kid,
                      detail="the label names another key now; change the identity config to rotate")
            return False
        with contextlib.suppress(p11.PKCS11Error):
            self._session.close()
        self._session, self._private = fresh._session, fresh._private
        log.warning("identity_token_reopened", kid=self.kid, why=why)
        return True

    def _sign(self, signing_input: bytes) -> bytes:
        if self.alg.startswith("ES"):
            # SoftHSM2 (and some HSMs) have no CKM_ECDSA_SHA256: hash here, sign the digest in the token.
            digest = (hashlib.sha256 if self.alg == "ES256" else hashlib.sha384)(signing_input).digest()
            signature: bytes = self._private.sign(digest, mechanism=Mechanism.ECDSA)  # r||s, fixed size
            return signature
        if self.alg == "PS256":
            return bytes(self._private.sign(signing_input, mechanism=Mechanism.SHA256_RSA_PKCS_PSS,
                                            mechanism_param=(Mechanism.SHA256, MGF.SHA256, 32)))
        return bytes(self._private.sign(signing_input, mechanism=Mechanism.SHA256_RSA_PKCS))

    def close(self) -> None:
        with contextlib.suppress(p11.PKCS11Error):  # a session the HSM already dropped
            self._session.close()

    def __repr__(self) -> str:
        return f"Pkcs11SigningKey(alg={self.alg}, kid={self.kid})"
