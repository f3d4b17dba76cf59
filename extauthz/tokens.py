"""Strict parsing of a compact JWS before anything trusts a byte of it.

PyJWT accepts padded base64, duplicate JSON keys (the last wins), NaN, and any header; here each
of those is refused, and the size cap is checked before any decoding so an oversize token costs
nothing. Nothing here fetches keys or checks a signature: see verify.py.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pavilion.errors import MalformedToken

# Header parameters a token may carry. `x5t`/`x5t#S256` are thumbprints some IdPs add: inert.
ALLOWED_HEADER = frozenset({"alg", "kid", "typ", "cty", "crit", "x5t", "x5t#S256"})
# Parameters that point at keys chosen by the sender: never followed, the token is refused.
KEY_POINTERS = frozenset({"jku", "x5u", "jwk", "x5c"})

_B64URL = re.compile(rb"[A-Za-z0-9_-]*")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64_VALUE = {char: value for value, char in enumerate(_B64_ALPHABET)}
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_MAX_KID = 256


@dataclass(frozen=True)
class ParsedToken:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        return str(self.header["alg"])

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def b64url_decode(segment: bytes, what: str) -> bytes:
    """Bytes of an unpadded, canonical base64url segment (RFC 7515 section 2)."""
    if not _B64URL.fullmatch(segment):
        raise MalformedToken(f"{what} is not unpadded base64url")
    tail = len(segment) % 4
    if tail == 1:
        raise MalformedToken(f"{what} has an impossible base64url length")
    # Unused low bits of the last character must be zero, or one token has several spellings
    # (2 characters left carry 1 byte and 4 spare bits; 3 carry 2 bytes and 2 spare bits).
    if tail and _B64_VALUE[segment[-1]] & (0x0F if tail == 2 else 0x03):
        raise MalformedToken(f"{what} is not canonical base64url")
    try:
        return binascii.a2b_base64(segment.translate(_TO_STANDARD) + b"=" * (-tail % 4))
    except binascii.Error as exc:
        raise MalformedToken(f"{what} is not base64url") from exc


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise MalformedToken("a JSON object has a duplicate member", reason="duplicate_member")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise MalformedToken(f"JSON constant {name} is not JSON")


# One decoder for every call: json.loads with hooks would build a new one each time.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def strict_json_object(raw: bytes, what: str) -> dict[str, Any]:
    """A JSON object from UTF-8 `raw`: no duplicate members, no NaN/Infinity, nothing but an object."""
    try:
        text = raw.decode("utf-8")
        value = _DECODER.decode(text)
    except UnicodeDecodeError as exc:
        raise MalformedToken(f"{what} is not UTF-8") from exc
    except RecursionError as exc:
        raise MalformedToken(f"{what} nests too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, and int strings over Python's digit limit
        raise MalformedToken(f"{what} is not JSON") from exc
    if not isinstance(value, dict):
        raise MalformedToken(f"{what} is not a JSON object")
    return value


def check_header(header: dict[str, Any]) -> None:
    pointers = KEY_POINTERS.intersection(header)
    if pointers:
        raise MalformedToken(f"header parameter {sorted(pointers)[0]} is refused (keys come from the tenant)",
                             reason="forbidden_header")
    unknown = set(header) - ALLOWED_HEADER
    if unknown:
        raise MalformedToken("header has a parameter that is not allowed", reason="forbidden_header")
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise MalformedToken("header alg is missing or not a string")
    if alg.lower() == "none":
        raise MalformedToken("alg none is refused", reason="alg_not_allowed")
    if "crit" in header:
        # We implement no JWS extension, so any critical one is one we do not understand (RFC 7515 4.1.11).
        raise MalformedToken("header crit names an extension this service does not implement",
                             reason="forbidden_header")
    kid = header.get("kid", "-")
    if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID:
        raise MalformedToken("header kid is not a short non-empty string")
    for name in ("typ", "cty"):
        if name in header and not isinstance(header[name], str):
            raise MalformedToken(f"header {name} is not a string")
    if header.get("cty", "").upper() in ("JWT", "APPLICATION/JWT"):
        raise MalformedToken("nested JWTs are not accepted")


def split_compact(token: str, max_bytes: int, what: str = "token") -> tuple[bytes, bytes, bytes]:
    """The three base64url segments of a compact JWS, still encoded; MalformedToken when it is not one.

    The size cap comes first, before any decoding: a multi-megabyte token is refused in constant time.
    """
    if not isinstance(token, str):
        raise MalformedToken(f"{what} is not text")
    if len(token) > max_bytes:
        raise MalformedToken(f"{what} is longer than {max_bytes} bytes", reason="oversize")
    if not token.isascii():
        raise MalformedToken(f"{what} has non-ASCII characters")
    data = token.encode("ascii")
    if data.count(b".") != 2:
        raise MalformedToken(f"{what} does not have exactly three parts")
    head_b64, body_b64, sig_b64 = data.split(b".")
    if not head_b64 or not body_b64 or not sig_b64:
        raise MalformedToken(f"{what} has an empty part")
    return head_b64, body_b64, sig_b64


def decode_segments(head_b64: bytes, body_b64: bytes, sig_b64: bytes,
                    header_check: Callable[[dict[str, Any]], None] = check_header) -> ParsedToken:
    """The decoded parts of `split_compact`'s segments; `header_check` refuses a header (MalformedToken)."""
    header = strict_json_object(b64url_decode(head_b64, "header"), "header")
    header_check(header)
    claims = strict_json_object(b64url_decode(body_b64, "payload"), "payload")
    signature = b64url_decode(sig_b64, "signature")
    return ParsedToken(header=header, claims=claims, signing_input=head_b64 + b"." + body_b64, signature=signature)


def parse_token(token: str, max_bytes: int) -> ParsedToken:
    """The decoded parts of a compact JWS (an access token), or MalformedToken with a reason code."""
    return decode_segments(*split_compact(token, max_bytes))
