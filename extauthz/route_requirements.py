"""What a route requires of a token beyond its tenant: OAuth scopes and claim values.

A route states them in two ext_authz context extensions (the control plane writes them from the route
YAML's `auth`; a hand-written Envoy config may set them the same way):

    scopes: "accounts:read accounts:write"     every one must be among the token's scopes
    claims: '{"groups":["admins","ops"]}'      every claim named must hold one of its values

A token's scopes are the union of `scope` (RFC 9068: one space-separated string) and `scp` (a string
or an array, as Okta and Microsoft Entra issue it). A claim holds a value when it is that very string,
or an array with that string among its elements: numbers, booleans and objects never match, so
`"admin": true` does not satisfy `["true"]`, and nothing is converted on the way.

A route has one pair of strings that never changes, so each pair is read once. A pair that cannot be
read is a broken route, not a bad token: its requests get 503 (never a pass), and the cause is logged
when the pair is first read.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from extauthz import decision
from extauthz.decision import Outcome
from pavilion.log import get_logger

log = get_logger(__name__)

# The claims a token's scopes are read from: a route requires them through `scopes`, never by value.
SCOPE_CLAIMS = ("scope", "scp")
# RFC 6749 section 3.3: scope-token = 1*NQCHAR, printable ASCII without space, quote and backslash.
# Written so that Python's `re` and ECMA-262 read it alike: the control plane's JSON Schema uses it too.
SCOPE_PATTERN = r"^[!#-\[\]-~]+$"
_SCOPE_TOKEN = re.compile(SCOPE_PATTERN)
# The longest `scopes` or `claims` extension read; the control plane refuses a route above it at load.
MAX_EXTENSION = 8192


@dataclass(frozen=True, slots=True)
class RouteRequirement:
    scopes: frozenset[str]
    claims: tuple[tuple[str, frozenset[str]], ...]
    missing_scope: Outcome  # the refusals, built once: every request that fails gets the same answer
    claim_not_allowed: Outcome

    def refusal(self, token_scopes: frozenset[str], claims: Mapping[str, Any]) -> Outcome | None:
        if not self.scopes <= token_scopes:
            return self.missing_scope
        for name, accepted in self.claims:
            if not _holds(claims.get(name), accepted):
                return self.claim_not_allowed
        return None


def _holds(value: Any, accepted: frozenset[str]) -> bool:
    if isinstance(value, str):
        return value in accepted
    if isinstance(value, list):
        return any(isinstance(item, str) and item in accepted for item in value)
    return False


def token_scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    """The union of the token's `scope` and `scp`: strings split on spaces, arrays' string elements."""
    found: set[str] = set()
    for name in SCOPE_CLAIMS:
        value = claims.get(name)
        if isinstance(value, str):
            found.update(part for part in value.split(" ") if part)
        elif isinstance(value, list):
            found.update(item for item in value if isinstance(item, str) and item)
    return frozenset(found)


@functools.lru_cache(maxsize=1024)
def route_requirement(scopes: str | None, claims: str | None) -> RouteRequirement | Outcome:
    """The requirement of a route's `scopes` and `claims` extensions, or the 503 when they cannot be read."""
    try:
        required = _read_scopes(scopes) if scopes is not None else ()
        accepted = _read_claims(claims) if claims is not None else ()
    except ValueError as exc:
        log.warning("route_requirement_invalid", detail=str(exc))
        return decision.unavailable("route_requirement_invalid")
    named = " ".join(required)
    return RouteRequirement(
        scopes=frozenset(required), claims=accepted,
        missing_scope=decision.insufficient_scope("missing_scope", "the token lacks a scope this route requires",
                                                  named or None),
        claim_not_allowed=decision.insufficient_scope("claim_not_allowed",
                                                      "the token's claims are not accepted on this route"))


def _read_scopes(text: str) -> tuple[str, ...]:
    if len(text) > MAX_EXTENSION:
        raise ValueError("the scopes extension is longer than 8 KiB")
    scopes = tuple(dict.fromkeys(part for part in text.split(" ") if part))
    if not scopes:
        raise ValueError("the scopes extension names no scope")
    for scope in scopes:
        if not _SCOPE_TOKEN.fullmatch(scope):
            raise ValueError(f"scope {scope!r} is not an OAuth scope token (printable ASCII, no quote or backslash)")
    return scopes


def _read_claims(text: str) -> tuple[tuple[str, frozenset[str]], ...]:
    if len(text) > MAX_EXTENSION:
        raise ValueError("the claims extension is longer than 8 KiB")
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the claims extension is not JSON: {exc.msg} at {exc.pos}") from None
    if not isinstance(parsed, dict) or not parsed:
        raise ValueError("the claims extension is not a non-empty JSON object")
    accepted: list[tuple[str, frozenset[str]]] = []
    for name, values in parsed.items():
        if not name or name in SCOPE_CLAIMS:
            raise ValueError(f"claim {name!r} cannot be required by value (scopes go in the scopes extension)")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
            raise ValueError(f"claim {name!r}: expected a non-empty list of non-empty strings")
        accepted.append((name, frozenset(values)))
    return tuple(accepted)


__all__ = ["MAX_EXTENSION", "SCOPE_CLAIMS", "SCOPE_PATTERN", "RouteRequirement", "route_requirement", "token_scopes"]
