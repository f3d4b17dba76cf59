"""What one tenant accepts: issuer, audiences, algorithms, where its keys come from, and time rules.

Plain frozen data, validated at construction so a bad tenant is refused when the config loads,
never while a request waits. Config loading (YAML, durations, file:line) lives elsewhere and
builds these with keyword arguments.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pavilion.errors import ConfigError

# Asymmetric algorithms only: an HMAC secret shared with every relying party is not a tenant key.
SUPPORTED_ALGORITHMS = frozenset({
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
})
STORE_ERROR_POLICIES = ("deny", "allow")
# Proof algorithms accepted when a tenant names none (RFC 9449 section 5.1: asymmetric only).
DEFAULT_DPOP_ALGORITHMS = ("ES256", "ES384", "RS256", "PS256", "EdDSA")


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_fetch_url(url: str, *, allow_http_loopback: bool) -> str | None:
    """Why `url` may not be fetched for keys, or None when it may: https, or http to loopback if allowed."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "not a URL"
    if not parts.hostname:
        return "has no host"
    if parts.username or parts.password:
        return "carries credentials"
    if parts.fragment:
        return "has a fragment"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and allow_http_loopback and is_loopback_host(parts.hostname):
        return None
    if parts.scheme == "http":
        return "is plain http (https only; http is allowed to loopback only with allow_http_loopback)"
    return f"has scheme {parts.scheme!r} (https only)"


@dataclass(frozen=True)
class JwksSource:
    """Where a tenant's public keys come from: exactly one of inline, file, uri, discovery.

    `inline` holds the JWK Set as canonical JSON text (`{"keys": [...]}`) so the dataclass stays
    hashable; pass a list of JWK dicts or a `{"keys": [...]}` mapping and it is converted.
    """

    inline: str | None = None
    file: str | None = None
    uri: str | None = None
    discovery: str | None = None
    timeout: float = 2.0            # one HTTP request, connect to last byte
    refresh: float = 300.0          # key set lifetime when the server sends no Cache-Control max-age
    min_refresh: float = 60.0       # bounds applied to a server's max-age
    max_refresh: float = 86400.0
    cooldown: float = 30.0          # at most one refetch per cooldown for an unknown kid
    error_retry: float = 2.0        # first retry delay after a failed fetch (doubles, capped at refresh)
    max_bytes: int = 256 * 1024
    max_keys: int = 32
    allow_http_loopback: bool = False

    def __post_init__(self) -> None:
        if self.inline is not None:
            object.__setattr__(self, "inline", _inline_text(self.inline))
        chosen = [name for name in ("inline", "file", "uri", "discovery") if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ConfigError("give exactly one of inline, file, uri, discovery"
                              + (f" (got {', '.join(chosen)})" if chosen else ""), path="jwks")
        for name in ("uri", "discovery"):
            url = getattr(self, name)
            if url is not None:
                why = check_fetch_url(url, allow_http_loopback=self.allow_http_loopback)
                if why:
                    raise ConfigError(f"{url!r} {why}", path=f"jwks.{name}")
        for name in ("timeout", "refresh", "min_refresh", "max_refresh", "cooldown", "error_retry"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value < 1e7:
                raise ConfigError(f"must be a positive number of seconds, got {value!r}", path=f"jwks.{name}")
        if self.min_refresh > self.max_refresh:
            raise ConfigError("min_refresh is above max_refresh", path="jwks.min_refresh")
        for name in ("max_bytes", "max_keys"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"must be a positive integer, got {value!r}", path=f"jwks.{name}")

    @classmethod
    def of_keys(cls, keys: Iterable[Mapping[str, Any]], **settings: Any) -> JwksSource:
        """An inline source from JWK dicts."""
        return cls(inline=_inline_text(list(keys)), **settings)

    def inline_keys(self) -> list[Any]:
        """The inline JWKs as parsed JSON (empty for other sources)."""
        if self.inline is None:
            return []
        doc = json.loads(self.inline)
        return list(doc["keys"])

    @property
    def kind(self) -> str:
        return next(name for name in ("inline", "file", "uri", "discovery") if getattr(self, name) is not None)


def _inline_text(value: object) -> str:
    """Canonical JSON text of a JWK Set given as text, a {keys: [...]} mapping or a list of JWKs."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ConfigError("inline is not JSON", path="jwks.inline") from exc
    keys = value.get("keys") if isinstance(value, Mapping) else value
    if not isinstance(keys, list | tuple) or not all(isinstance(k, Mapping) for k in keys):
        raise ConfigError("inline must be a list of JWK objects or {keys: [...]}", path="jwks.inline")
    return json.dumps({"keys": [dict(k) for k in keys]}, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class DpopPolicy:
    """What a tenant asks of DPoP (RFC 9449): `required` refuses its unbound bearer tokens; a proof is
    accepted for `max_age` seconds after its `iat` (plus the tenant's clock skew), signed with one of
    `algorithms`, and with `nonce` only when it carries a nonce this service issued (section 9)."""

    required: bool = False
    max_age: float = 60.0
    algorithms: tuple[str, ...] = DEFAULT_DPOP_ALGORITHMS
    nonce: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.algorithms, list):
            object.__setattr__(self, "algorithms", tuple(self.algorithms))
        for name in ("required", "nonce"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError("must be true or false", path=f"dpop.{name}")
        if (not isinstance(self.max_age, int | float) or isinstance(self.max_age, bool)
                or not 1 <= self.max_age <= 3600):
            raise ConfigError(f"must be between 1s and 1h, got {self.max_age!r}", path="dpop.max_age")
        if not self.algorithms or not all(alg in SUPPORTED_ALGORITHMS for alg in self.algorithms):
            accepted = ", ".join(sorted(SUPPORTED_ALGORITHMS))
            raise ConfigError(f"must be a non-empty list of {accepted}", path="dpop.algorithms")


NO_KEYS = '{"keys":[]}'  # the canonical inline text of an empty key set: a tenant that only introspects
MAX_SECRET_BYTES = 4096


def read_secret_file(path: str) -> str:
    """The client secret in the file at `path` (one trailing newline dropped); ConfigError when it cannot be
    read or is empty. The message names the file, never its content."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the secret file {path}: {exc.strerror or type(exc).__name__}",
                          path="introspection.client_secret_file") from None
    if len(raw) > MAX_SECRET_BYTES:
        raise ConfigError(f"the secret file {path} is longer than {MAX_SECRET_BYTES} bytes",
                          path="introspection.client_secret_file")
    try:
        text = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        raise ConfigError(f"the secret file {path} is not UTF-8", path="introspection.client_secret_file") from None
    if not text or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise ConfigError(f"the secret file {path} is empty or holds control characters",
                          path="introspection.client_secret_file")
    return text


@dataclass(frozen=True)
class IntrospectionPolicy:
    """OAuth 2.0 Token Introspection (RFC 7662) for tokens the gateway cannot verify itself (opaque tokens).

    `endpoint` None: the `introspection_endpoint` of the tenant's OIDC discovery document. The secret is read
    from `client_secret_file` when the config loads (and re-read by the Introspector when the file changes); it
    is kept out of repr (logs, tracebacks)."""

    client_id: str
    client_secret_file: str
    client_secret: str = field(default="", repr=False)
    endpoint: str | None = None
    cache: float = 60.0             # longest reuse of an active answer (never past the token's exp)
    negative_cache: float = 5.0     # reuse of an inactive answer
    timeout: float = 1.0
    allow_http_loopback: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.client_id, str) or not self.client_id or ":" in self.client_id:
            # client_secret_basic joins id and secret with a colon (RFC 6749 section 2.3.1 form-encodes both,
            # but an id with a colon is a sign of a mistake here).
            raise ConfigError("must be a non-empty string without ':'", path="introspection.client_id")
        if not isinstance(self.client_secret_file, str) or not self.client_secret_file:
            raise ConfigError("must be a file path", path="introspection.client_secret_file")
        if not self.client_secret:
            object.__setattr__(self, "client_secret", read_secret_file(self.client_secret_file))
        if self.endpoint is not None:
            why = check_fetch_url(self.endpoint, allow_http_loopback=self.allow_http_loopback)
            if why:
                raise ConfigError(f"{self.endpoint!r} {why}", path="introspection.endpoint")
        for name, low, high in (("cache", 0.0, 86400.0), ("negative_cache", 0.0, 3600.0), ("timeout", 0.01, 30.0)):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(f"must be between {low:g}s and {high:g}s, got {value!r}",
                                  path=f"introspection.{name}")
        if not isinstance(self.allow_http_loopback, bool):
            raise ConfigError("must be true or false", path="introspection.allow_http_loopback")


@dataclass(frozen=True, kw_only=True)
class Tenant:
    id: str
    issuer: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    jwks: JwksSource
    clock_skew: float = 30.0
    max_lifetime: float = 86400.0
    claims_to_headers: tuple[tuple[str, str], ...] = ()
    on_store_error: str = "deny"
    token_type: str | None = None    # required `typ`, e.g. "at+jwt"; None: not checked
    max_token_bytes: int = 8192
    dpop: DpopPolicy = DpopPolicy()
    introspection: IntrospectionPolicy | None = None
    _algorithm_set: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"tenants.{self.id}"
        if not isinstance(self.id, str) or not self.id:
            raise ConfigError("tenant id must be a non-empty string", path="tenants.id")
        if not isinstance(self.issuer, str) or not self.issuer:
            raise ConfigError("issuer must be a non-empty string", path=f"{where}.issuer")
        for name in ("audiences", "algorithms", "claims_to_headers"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(tuple(v) if isinstance(v, list) else v for v in value))
        if not self.audiences or not all(isinstance(a, str) and a for a in self.audiences):
            raise ConfigError("audiences must be a non-empty list of strings", path=f"{where}.audiences")
        if not self.algorithms:
            raise ConfigError("algorithms must not be empty", path=f"{where}.algorithms")
        for alg in self.algorithms:
            if alg not in SUPPORTED_ALGORITHMS:
                accepted = ", ".join(sorted(SUPPORTED_ALGORITHMS))
                raise ConfigError(f"algorithm {alg!r} is not accepted; use one of {accepted}",
                                  path=f"{where}.algorithms")
        if not isinstance(self.jwks, JwksSource):
            raise ConfigError("jwks must be a JwksSource", path=f"{where}.jwks")
        for name, upper in (("clock_skew", 600.0), ("max_lifetime", 366 * 86400.0)):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= upper:
                raise ConfigError(f"must be between 0 and {upper:g} seconds, got {value!r}", path=f"{where}.{name}")
        if self.on_store_error not in STORE_ERROR_POLICIES:
            raise ConfigError("on_store_error must be deny or allow", path=f"{where}.on_store_error")
        if self.token_type is not None and (not isinstance(self.token_type, str) or not self.token_type):
            raise ConfigError("token_type must be a non-empty string", path=f"{where}.token_type")
        if not isinstance(self.max_token_bytes, int) or not 256 <= self.max_token_bytes <= 1 << 20:
            raise ConfigError("max_token_bytes must be between 256 and 1048576", path=f"{where}.max_token_bytes")
        if not isinstance(self.dpop, DpopPolicy):
            raise ConfigError("dpop must be a DpopPolicy", path=f"{where}.dpop")
        if self.introspection is not None and not isinstance(self.introspection, IntrospectionPolicy):
            raise ConfigError("introspection must be an IntrospectionPolicy", path=f"{where}.introspection")
        if self.introspection is not None and self.introspection.endpoint is None and self.jwks.discovery is None:
            raise ConfigError("introspection needs an endpoint unless the tenant's keys come from discovery",
                              path=f"{where}.introspection.endpoint")
        object.__setattr__(self, "_algorithm_set", frozenset(self.algorithms))

    @property
    def has_keys(self) -> bool:
        """False for a tenant that only introspects (no jwks given): its JWTs are introspected too."""
        return self.introspection is None or self.jwks.inline != NO_KEYS

    def allows_algorithm(self, alg: str) -> bool:
        return alg in self._algorithm_set
