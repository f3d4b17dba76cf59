"""What a route's `auth` may require of a token beyond its tenant: OAuth scopes and claim values.

Single-value checks (each raises ValueError with a message for the person who wrote the value), and
the two ext_authz context extensions they become. ext_authz (extauthz/route_requirements.py) reads
those extensions back and answers 503 to every request of a route whose extensions it cannot read,
so anything it would refuse is refused here first, at load time, with the file and line.
"""

from __future__ import annotations

import json
import re

from extauthz.route_requirements import MAX_EXTENSION, SCOPE_CLAIMS, SCOPE_PATTERN

__all__ = [
    "CLAIM_TEXT_PATTERN", "MAX_CLAIM_VALUE_BYTES", "MAX_EXTENSION", "SCOPE_CLAIMS", "SCOPE_PATTERN",
    "claim_name", "claim_value", "claims_extension", "scope_token", "scopes_extension",
]

# Non-empty, without control characters (Unicode category Cc is exactly these two ranges).
CLAIM_TEXT_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
_SCOPE = re.compile(SCOPE_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_CLAIM_VALUE_BYTES = 1024


def scope_token(text: str) -> str:
    if " " in text:
        raise ValueError(f"{text!r} holds a space: list each scope as its own item")
    if not _SCOPE.fullmatch(text):
        raise ValueError(f"{text!r} is not an OAuth scope token (RFC 6749 section 3.3): printable ASCII "
                         "only, without space, '\"' or '\\'")
    return text


def claim_name(text: str) -> str:
    if not text:
        raise ValueError("a claim name cannot be empty")
    if _CONTROL.search(text):
        raise ValueError(f"claim name {text!r} holds a control character")
    if text in SCOPE_CLAIMS:
        raise ValueError(f"claim {text!r} holds the token's scopes: require them with `scopes`, not `claims`")
    return text


def claim_value(text: str) -> str:
    if not text:
        raise ValueError("a claim value cannot be empty")
    if _CONTROL.search(text):
        raise ValueError(f"claim value {text!r} holds a control character")
    size = len(text.encode("utf-8"))
    if size > MAX_CLAIM_VALUE_BYTES:
        raise ValueError(f"claim value is {size} bytes long (UTF-8); at most {MAX_CLAIM_VALUE_BYTES}")
    return text


def scopes_extension(scopes: tuple[str, ...]) -> str:
    """The `scopes` context extension: the scopes in config order, separated by one space."""
    return " ".join(scopes)


def claims_extension(claims: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    """The `claims` context extension: compact JSON, names sorted, values in config order.

    ASCII only (json escapes the rest), so its length in characters is its length in bytes."""
    return json.dumps({name: list(values) for name, values in claims}, separators=(",", ":"), sort_keys=True)
