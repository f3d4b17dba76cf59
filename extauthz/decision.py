"""Pure request facts to decided outcomes: which credential, which tenants, what to answer.

No I/O here. `authorizer.py` calls these around verification and revocation; `service.py` turns an
`Outcome` into a CheckResponse. Every refusal carries a stable `reason` (a metric label and a log
field) and, for 400/401/403, an RFC 6750 `WWW-Authenticate` challenge:

    400 invalid_request     two credentials, an empty bearer, a token in the query string
    401 (no error code)     no credential, or one of another scheme (RFC 6750 section 3.1)
    401 invalid_token       the token is refused (malformed, expired, bad signature, revoked, ...)
    403 insufficient_scope  a valid token this route does not admit (its tenant, scopes or claims)
    503                     a dependency failed (keys cold, revocation store down with on_store_error deny)

A request with the DPoP scheme (RFC 9449) is answered with a `WWW-Authenticate: DPoP ...` challenge
carrying the proof algorithms accepted (`algs`), and `error="invalid_dpop_proof"` for a refused proof.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl

TENANT_HEADER = "x-pavilion-tenant"
SUBJECT_HEADER = "x-pavilion-subject"
MAX_HEADER_VALUE_BYTES = 1024
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
TOKEN68 = _B64TOKEN  # RFC 7235 token68: what a bearer or DPoP access token may hold
_DESCRIPTION_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')
_MAX_DESCRIPTION = 200


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to answer. For an allowed request `headers` go upstream; for a refusal they go to the client.
    `response_headers` go to the client with an allowed request's response (the DPoP-Nonce of RFC 9449)."""

    status: int  # 200 allowed; otherwise the HTTP status of the refusal
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    headers_to_remove: tuple[str, ...] = ()
    tenant: str | None = None
    subject: str | None = None
    client: str | None = None  # the OAuth client the token was issued to (`token_client`), for rate limits
    response_headers: tuple[tuple[str, str], ...] = ()
    # A field, not a property: read on every request, and a property is a Python call.
    allowed: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", self.status == 200)

    @property
    def body(self) -> str:
        return json.dumps({"error": self.reason})


def _escape(description: str) -> str:
    text = _DESCRIPTION_UNSAFE.sub("?", description)
    return text if len(text) <= _MAX_DESCRIPTION else text[: _MAX_DESCRIPTION - 3] + "..."


def challenge(error: str | None = None, description: str | None = None, scope: str | None = None) -> str:
    """A `WWW-Authenticate: Bearer ...` value; the description is printable ASCII with no quote or backslash.

    `scope` (RFC 6750 section 3) names the scopes the resource needs; its tokens are NQCHAR (RFC 6749
    section 3.3: no space, quote or backslash), which `route_requirements` checks before it gets here.
    """
    if error is None:
        return "Bearer"
    value = f'Bearer error="{error}"'
    if description:
        value += f', error_description="{_escape(description)}"'
    if scope:
        value += f', scope="{scope}"'
    return value


def _refusal(status: int, reason: str, www_authenticate: str | None) -> Outcome:
    headers = [("content-type", "application/json"), ("cache-control", "no-store")]
    if www_authenticate is not None:
        headers.append(("www-authenticate", www_authenticate))
    return Outcome(status=status, reason=reason, headers=tuple(headers))


def missing_credential(reason: str = "missing") -> Outcome:
    return _refusal(401, reason, challenge())


def invalid_request(reason: str, description: str) -> Outcome:
    return _refusal(400, reason, challenge("invalid_request", description))


def invalid_token(reason: str, description: str) -> Outcome:
    return _refusal(401, reason, challenge("invalid_token", description))


def insufficient_scope(reason: str, description: str, scope: str | None = None) -> Outcome:
    return _refusal(403, reason, challenge("insufficient_scope", description, scope))


def unavailable(reason: str) -> Outcome:
    return _refusal(503, reason, None)


def dpop_challenge(error: str | None, description: str | None, algs: tuple[str, ...]) -> str:
    """A `WWW-Authenticate: DPoP ...` value (RFC 9449 sections 7.1 and 12.2)."""
    params = [] if error is None else [f'error="{error}"']
    if error is not None and description:
        params.append(f'error_description="{_escape(description)}"')
    params.append(f'algs="{" ".join(algs)}"')
    return "DPoP " + ", ".join(params)


def invalid_dpop_proof(reason: str, description: str, algs: tuple[str, ...]) -> Outcome:
    return _refusal(401, reason, dpop_challenge("invalid_dpop_proof", description, algs))


def use_dpop_nonce(reason: str, description: str, nonce: str, algs: tuple[str, ...]) -> Outcome:
    """401 asking for a proof with `nonce` (RFC 9449 section 9), given in the DPoP-Nonce header."""
    refusal = _refusal(401, reason, dpop_challenge("use_dpop_nonce", description, algs))
    return Outcome(status=401, reason=reason, headers=(*refusal.headers, ("dpop-nonce", nonce)))


def with_dpop_nonce(outcome: Outcome, nonce: str) -> Outcome:
    """An allowed outcome that also gives the client `nonce` in a DPoP-Nonce header of its response."""
    return replace(outcome, response_headers=(*outcome.response_headers, ("dpop-nonce", nonce)))


def dpop_invalid_token(reason: str, description: str, algs: tuple[str, ...]) -> Outcome:
    return _refusal(401, reason, dpop_challenge("invalid_token", description, algs))


def as_dpop(outcome: Outcome, algs: tuple[str, ...]) -> Outcome:
    """A refusal of a DPoP request: its Bearer challenge (if any) said with the DPoP scheme, `algs` added."""
    headers = outcome.headers
    if outcome.allowed or not any(name == "www-authenticate" for name, _ in headers):
        return outcome
    changed: list[tuple[str, str]] = []
    for name, value in headers:
        if name == "www-authenticate" and (value == "Bearer" or value.startswith("Bearer ")):
            value = "DPoP " + ", ".join([part for part in (value[7:],) if part] + [f'algs="{" ".join(algs)}"'])
        changed.append((name, value))
    return Outcome(status=outcome.status, reason=outcome.reason, headers=tuple(changed))


def route_tenants(context_extensions: Mapping[str, str]) -> tuple[str, ...] | None:
    """The tenants a route admits (`tenant: "a,b"` set on the route), or None when the route names none."""
    raw = context_extensions.get("tenant")
    if raw is None:
        return None
    return split_tenants(raw)


@functools.lru_cache(maxsize=1024)
def split_tenants(raw: str) -> tuple[str, ...]:
    """The tenants of a route's `tenant` extension ("a,b")."""
    # Routes are few and their extension strings never change: split each once.
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def bearer_token(headers: Mapping[str, str], path: str) -> str | Outcome:
    """The one bearer token of the request, or the refusal when there is none or more than one."""
    header = headers.get("authorization")
    if header is not None and header[:7] in ("Bearer ", "bearer ") and "access_token" not in path:
        token = header[7:]
        if _B64TOKEN.fullmatch(token):  # the common case: one token, nothing else (no comma, no space)
            return token
    query = path.partition("?")[2]
    in_query = "access_token" in query and any(
        name == "access_token" for name, _ in parse_qsl(query, keep_blank_values=True))
    if header is None:
        if in_query:
            return invalid_request("query_token", "send the token in the Authorization header")
        return missing_credential()
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        if "," in header and "bearer" in header.lower():
            return invalid_request("multiple_credentials", "more than one credential")
        return missing_credential("unsupported_scheme")
    token = rest.strip(" ")
    # Envoy joins repeated headers with commas, and a token never holds one: a comma means two credentials.
    if "," in token:
        return invalid_request("multiple_credentials", "more than one credential")
    if in_query:
        return invalid_request("multiple_credentials", "more than one credential")
    if not token:
        return invalid_request("empty_bearer", "the bearer token is empty")
    if not _B64TOKEN.fullmatch(token):
        return invalid_request("malformed_credential", "the bearer token has characters a token cannot hold")
    return token


def header_value(value: Any) -> str | None:
    """A claim as a header value; None when absent; ValueError when it cannot be passed safely.

    Arrays are joined with commas, so an element holding a comma would forge extra values: refused.
    Control characters (CR, LF, NUL, DEL, C1, line separators) and values over 1 KiB are refused.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        text = value
    elif isinstance(value, list):
        parts: list[str] = []
        for item in value:
            if isinstance(item, list | dict) or item is None:
                raise ValueError("an array element is not a scalar")
            part = header_value(item)
            if part is not None and "," in part:
                raise ValueError("an array element holds a comma")
            parts.append(part or "")
        text = ",".join(parts)
    else:
        raise ValueError("an object cannot be a header")
    if not text:
        return None
    if len(text.encode("utf-8", "surrogatepass")) > MAX_HEADER_VALUE_BYTES:
        raise ValueError("the value is longer than 1 KiB")
    if text != text.strip() or any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in text):
        raise ValueError("the value holds control characters or surrounding spaces")
    return text


# Where a token names the client it was issued to: RFC 9068 access tokens carry `client_id`; OIDC tokens
# carry `azp` (authorized party).
CLIENT_CLAIMS = ("client_id", "azp")


def token_client(claims: Mapping[str, Any]) -> str | None:
    """The token's client: the first of `client_id`, `azp` that is a string; None when it is absent or
    not safe as a header value (control characters, over 1 KiB). It only keys rate limits, so an odd
    value does not refuse the token: the request then counts with the requests that have no client."""
    for name in CLIENT_CLAIMS:
        value = claims.get(name)
        if isinstance(value, str):
            try:
                return header_value(value)
            except ValueError:
                return None
    return None


def allowed(tenant_id: str, subject: str, claims: Mapping[str, Any],
            claims_to_headers: tuple[tuple[str, str], ...]) -> Outcome:
    """The OK outcome: identity headers set, every identity header not set removed; or a refusal.

    Envoy applies `headers_to_remove` after `headers`, so a header we set must not also be listed for
    removal; the set itself replaces whatever value the client sent.
    """
    headers: list[tuple[str, str]] = [(TENANT_HEADER, tenant_id)]
    remove: list[str] = []
    for claim, name in ((None, SUBJECT_HEADER), *claims_to_headers):
        raw = subject if claim is None else claims.get(claim)
        try:
            value = header_value(raw)
        except ValueError:
            return invalid_token("bad_claim", f"claim {claim or 'sub'} cannot be passed on as a header")
        if value is None:
            if claim is None:
                return invalid_token("bad_claim", "the token has no usable subject")
            remove.append(name)
        else:
            headers.append((name, value))
    return Outcome(status=200, reason="ok", headers=tuple(headers), headers_to_remove=tuple(remove),
                   tenant=tenant_id, subject=subject, client=token_client(claims))
