"""A DPoP proof (RFC 9449 section 4.3) checked against one request and one access token. Pure: no I/O.

The proof is a compact JWS the client signs for each request with the key its token is bound to. It is
read with the access tokens' own strict primitives (tokens.py: size cap first, canonical unpadded
base64url, three segments, JSON objects without duplicate members) and refused, with a reason code, when:

- its header is not `typ: dpop+jwt`, `alg` is not asymmetric and in the tenant's `dpop.algorithms`, `jwk`
  is not a public key passing the JWKS key checks (jwk.py: no private members, RSA >= 2048 bits, NIST
  curves or Ed25519/Ed448), or it names other keys (`jku`, `x5u`, `x5c`) or a `crit` extension;
- the key's RFC 7638 thumbprint is not the token's `cnf.jkt` (checked before the signature: a stolen
  token with the thief's own key costs no signature check);
- the signature does not verify with that key;
- `htm` is not the request method, `htu` not the request URL (scheme://host[:port]/path, no query or
  fragment, compared after RFC 3986 normalisation: case of scheme and host, default port, percent-encoding,
  dot segments; the port only when Envoy passes it on, which the gateway's listeners do not);
- `iat` is older than `max_age` plus the clock skew, or later than now plus the skew;
- `jti` is missing or longer than 128 characters; `ath` is not base64url(SHA-256(access token)).

Replay (a `jti` seen before) is the store's business (dpop_replay.py). A header that passed once (the
same client sends the same header with every proof) is kept with its parsed key and thumbprint, so a
client's later proofs cost a signature check, not a key parse.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from extauthz.jwk import Key, RejectedKey, parse_jwk
from extauthz.signing import jwk_thumbprint
from extauthz.tenant import SUPPORTED_ALGORITHMS, DpopPolicy
from extauthz.tokens import b64url_decode, b64url_encode, split_compact, strict_json_object
from extauthz.verify import MAX_NUMERIC_DATE, check_signature
from pavilion.errors import MalformedToken, TokenError

__all__ = ["MAX_JTI", "MAX_PROOF_BYTES", "InvalidProof", "VerifiedProof", "access_token_hash", "normalise_url",
           "verify_proof"]

# An RSA-8192 proof (key and signature, ~2.8 KB encoded) fits; anything larger is refused before decoding.
MAX_PROOF_BYTES = 6144
MAX_JTI = 128
_PROOF_TYPES = ("dpop+jwt", "application/dpop+jwt")
_REFUSED_HEADER = ("jku", "x5u", "x5c", "crit")
_MAX_KEYS = 10_000
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class InvalidProof(TokenError):
    """A proof refused for this request; `reason` is a dpop_* code, `description` never quotes the proof."""


@dataclass(frozen=True, slots=True)
class _ProofKey:
    alg: str
    key: Key
    jkt: str


@dataclass(frozen=True, slots=True)
class VerifiedProof:
    jkt: str   # the RFC 7638 thumbprint of the proof's key
    jti: str
    iat: float
    nonce: str | None = None  # checked by the caller when the tenant asks for nonces (dpop_nonce.py)


# header segment (bytes, as sent) -> its checked key; bounded, cleared when full
_keys: dict[bytes, _ProofKey] = {}


def access_token_hash(token: str) -> str:
    """The `ath` a proof must carry for `token`: base64url(SHA-256(ASCII token)), unpadded."""
    return b64url_encode(hashlib.sha256(token.encode("ascii", "replace")).digest())


def _percent(match: re.Match[str]) -> str:
    char = chr(int(match.group()[1:], 16))
    return char if char in _UNRESERVED else match.group().upper()


def _remove_dot_segments(path: str) -> str:
    segments = path.split("/")
    out = [""]
    for index, segment in enumerate(segments[1:], start=1):
        last = index == len(segments) - 1
        if segment == "..":
            if len(out) > 1:
                out.pop()
        elif segment != ".":
            out.append(segment)
            continue
        if last:
            out.append("")
    return "/".join(out) or "/"


def normalise_url(url: str, *, keep_port: bool = True) -> str | None:
    """`url` as scheme://host[:port]/path for comparison (RFC 3986 sections 6.2.2 and 6.2.3: scheme and host
    lower-cased, a default port dropped, percent-encodings upper-cased and unreserved ones decoded, dot
    segments removed, an empty path as "/"), without query and fragment; None when it is no http(s) URL.
    `keep_port=False` leaves any port out (see dpop_check.request_url)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None or parts.password is not None:
        return None
    if ":" in host:
        host = f"[{host}]"
    if keep_port and port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    path = _PERCENT.sub(_percent, parts.path) if "%" in parts.path else parts.path
    if not path.startswith("/"):
        path = "/" + path
    if "." in path:
        path = _remove_dot_segments(path)
    return f"{scheme}://{host}{path}"


def _check_header(header: dict[str, Any]) -> None:
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in _PROOF_TYPES:
        raise InvalidProof("the proof's typ is not dpop+jwt", reason="dpop_proof_invalid")
    refused = [name for name in _REFUSED_HEADER if name in header]
    if refused:
        raise InvalidProof(f"the proof's header has {refused[0]}", reason="dpop_proof_invalid")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS:
        raise InvalidProof("the proof's alg is not an asymmetric signature algorithm", reason="dpop_alg_not_allowed")
    if not isinstance(header.get("jwk"), dict):
        raise InvalidProof("the proof's header has no jwk object", reason="dpop_proof_invalid")


def _proof_key(head_b64: bytes) -> _ProofKey:
    known = _keys.get(head_b64)
    if known is not None:
        return known
    header = strict_json_object(b64url_decode(head_b64, "the proof's header"), "the proof's header")
    _check_header(header)
    alg, jwk = header["alg"], header["jwk"]
    try:
        key = parse_jwk(jwk)
    except RejectedKey as exc:
        raise InvalidProof(f"the proof's jwk is refused: {exc}", reason="dpop_proof_invalid") from None
    if not key.accepts(alg):
        raise InvalidProof("the proof's alg does not match its jwk", reason="dpop_proof_invalid")
    found = _ProofKey(alg, key, jwk_thumbprint(jwk))
    if len(_keys) >= _MAX_KEYS:
        _keys.clear()
    _keys[head_b64] = found
    return found


def _number(claims: dict[str, Any], name: str) -> float:
    value = claims.get(name)
    # Compared before any float(): an integer of hundreds of digits is valid JSON and overflows a float.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_NUMERIC_DATE:
        raise InvalidProof(f"the proof's {name} is missing or not a time", reason="dpop_proof_invalid")
    return float(value)


def verify_proof(proof: str, *, method: str, url: str | None, access_token: str, jkt: str, policy: DpopPolicy,
                 skew: float, now: float, port_known: bool = True) -> VerifiedProof:
    """The verified proof for a request of `method` to `url` (normalised, see `normalise_url`) with
    `access_token` bound to `jkt`; InvalidProof naming the first rule it breaks. `port_known=False`: the
    request's port is unknown (`url` has none), so the port of the proof's `htu` is not compared."""
    try:
        head_b64, body_b64, sig_b64 = split_compact(proof, MAX_PROOF_BYTES, "the DPoP proof")
        proof_key = _proof_key(head_b64)
        claims = strict_json_object(b64url_decode(body_b64, "the proof's payload"), "the proof's payload")
        signature = b64url_decode(sig_b64, "the proof's signature")
    except MalformedToken as exc:
        reason = "dpop_proof_oversize" if exc.reason == "oversize" else "dpop_proof_invalid"
        raise InvalidProof(exc.description, reason=reason) from None
    if proof_key.alg not in policy.algorithms:
        raise InvalidProof("the proof's alg is not accepted here", reason="dpop_alg_not_allowed")
    if proof_key.jkt != jkt:
        raise InvalidProof("the proof's key is not the one the token is bound to", reason="dpop_key_mismatch")
    try:
        check_signature(proof_key.key, proof_key.alg, head_b64 + b"." + body_b64, signature)
    except TokenError:
        raise InvalidProof("the proof's signature does not verify", reason="dpop_proof_invalid") from None
    if claims.get("htm") != method:
        raise InvalidProof("the proof's htm is not the request method", reason="dpop_htm_mismatch")
    htu = claims.get("htu")
    if url is None or not isinstance(htu, str) or normalise_url(htu, keep_port=port_known) != url:
        raise InvalidProof("the proof's htu is not the request URL", reason="dpop_htu_mismatch")
    iat = _number(claims, "iat")
    if iat < now - policy.max_age - skew:
        raise InvalidProof("the proof is too old", reason="dpop_expired")
    if iat > now + skew:
        raise InvalidProof("the proof was issued in the future", reason="dpop_iat_in_future")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI:
        raise InvalidProof(f"the proof's jti is missing or longer than {MAX_JTI} characters",
                           reason="dpop_proof_invalid")
    ath = claims.get("ath")
    if not isinstance(ath, str):
        raise InvalidProof("the proof has no ath (the access token's hash)", reason="dpop_ath_mismatch")
    if ath != access_token_hash(access_token):
        raise InvalidProof("the proof's ath is not the access token's hash", reason="dpop_ath_mismatch")
    nonce = claims.get("nonce")
    return VerifiedProof(proof_key.jkt, jti, iat, nonce if isinstance(nonce, str) else None)
