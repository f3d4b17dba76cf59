"""The ext_authz tenant file (YAML) turned into frozen `Tenant`s, with every error at FILE:LINE:COL.

    tenants:
      - id: acme
        issuer: https://idp.acme.test
        audiences: [accounts-api]
        algorithms: [RS256, ES256]
        jwks: {inline: {keys: [...]}}     # or {file: PATH}, {uri: URL}, {discovery: URL}
        clock_skew: 30s
        max_lifetime: 24h
        claims_to_headers: {sub: x-user-id, email: x-user-email}
        on_store_error: deny              # or allow
        dpop: {required: false, max_age: 60s, algorithms: [ES256, RS256], nonce: false}   # RFC 9449
        introspection:                    # RFC 7662, for opaque tokens; with it `jwks` may be left out
          endpoint: https://idp.acme.test/oauth2/introspect   # or none: discovery's introspection_endpoint
          client_id: pavilion-gateway
          client_secret_file: secrets/introspection-secret    # relative to this file, read at load, then followed
          cache: 60s
          negative_cache: 5s
          timeout: 1s

`discovery: URL` is also accepted beside the other tenant fields instead of `jwks`. Loading only
reads and checks: using the tenants (key sets, verification) is `tenant_set.Tenants`' business, so
the same tenants can later come from the control plane instead of a file.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from extauthz.tenant import NO_KEYS, DpopPolicy, IntrospectionPolicy, JwksSource, Tenant
from pavilion.durations import parse_duration
from pavilion.errors import ConfigError, ConfigErrors, Location
from pavilion.yaml_nodes import Key, Mapping, Node, Scalar, Sequence, parse_documents

_TENANT_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
# Identity headers this service owns, and headers a claim must never overwrite.
RESERVED_HEADERS = frozenset({
    "x-pavilion-tenant", "x-pavilion-subject", "authorization", "host", "cookie", "connection",
    "content-length", "content-type", "transfer-encoding", "te", "upgrade", "keep-alive",
    "proxy-authorization", "x-forwarded-for", "x-forwarded-proto", "x-envoy-original-path",
})
_TENANT_FIELDS = {
    "id", "issuer", "audiences", "algorithms", "jwks", "discovery", "clock_skew", "max_lifetime",
    "claims_to_headers", "on_store_error", "token_type", "max_token_bytes", "dpop", "introspection",
}
_JWKS_DURATIONS = ("timeout", "refresh", "min_refresh", "max_refresh", "cooldown", "error_retry")
_JWKS_FIELDS = {"inline", "file", "uri", "discovery", "max_bytes", "max_keys", "allow_http_loopback",
                *_JWKS_DURATIONS}


def load_tenants(path: str | Path) -> tuple[Tenant, ...]:
    """The tenants of the file at `path`; ConfigErrors listing every problem, each at FILE:LINE:COL."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the tenant file: {exc}", location=Location(str(path))) from None
    return parse_tenants(text, str(path), base_dir=path.parent)


def parse_tenants(text: str, file: str, base_dir: Path | None = None) -> tuple[Tenant, ...]:
    documents = parse_documents(text, file)
    if len(documents) != 1 or not isinstance(documents[0], Mapping):
        raise ConfigError("the file must hold one mapping with a `tenants` list", location=Location(file, 1, 1))
    root = documents[0]
    errors: list[ConfigError] = []
    fields = _fields(root, {"tenants", "identity"}, "", errors)  # `identity`: extauthz/identity_config.py
    tenants_node = fields.get("tenants")
    if not isinstance(tenants_node, Sequence) or not tenants_node.items:
        errors.append(ConfigError("`tenants` must be a non-empty list", location=(tenants_node or root).loc,
                                  path="tenants"))
        raise ConfigErrors(errors)
    tenants: list[tuple[Tenant, Node]] = []
    for index, node in enumerate(tenants_node.items):
        tenant = _tenant(node, f"tenants[{index}]", base_dir or Path(file).parent, errors)
        if tenant is not None:
            tenants.append((tenant, node))
    _check_unique(tenants, errors)
    if errors:
        raise ConfigErrors(sorted(errors, key=lambda e: (e.location.line, e.location.column) if e.location else (0, 0)))
    return tuple(tenant for tenant, _node in tenants)


def _fields(node: Mapping, allowed: set[str], path: str, errors: list[ConfigError]) -> dict[str, Node]:
    result: dict[str, Node] = {}
    for key, value in node.items:
        where = f"{path}.{key.text}" if path else key.text
        if key.text not in allowed:
            errors.append(ConfigError(f"unknown field; expected one of {', '.join(sorted(allowed))}",
                                      location=key.loc, path=where))
        elif key.text in result:
            errors.append(ConfigError("field given twice", location=key.loc, path=where))
        else:
            result[key.text] = value
    return result


class _Invalid(Exception):
    def __init__(self, message: str, node: Node, field: str = "") -> None:
        super().__init__(message)
        self.node = node
        self.field = field  # ".name" of the member at fault inside a nested block, "" for the field itself


def _string(node: Node) -> str:
    if isinstance(node, Scalar) and isinstance(node.value, str) and node.value:
        return node.value
    raise _Invalid("must be a non-empty string", node)


def _strings(node: Node) -> tuple[str, ...]:
    if isinstance(node, Scalar) and isinstance(node.value, str) and node.value:
        return (node.value,)
    if isinstance(node, Sequence) and node.items:
        return tuple(_string(item) for item in node.items)
    raise _Invalid("must be a non-empty list of strings", node)


def _seconds(node: Node) -> float:
    if not isinstance(node, Scalar) or not isinstance(node.value, str):
        raise _Invalid("must be a duration such as 30s, 5m or 24h", node)
    try:
        return parse_duration(node.value)
    except ValueError as exc:
        raise _Invalid(str(exc), node) from None


def _int(node: Node) -> int:
    if isinstance(node, Scalar) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    raise _Invalid("must be an integer", node)


def _bool(node: Node) -> bool:
    if isinstance(node, Scalar) and isinstance(node.value, bool):
        return node.value
    raise _Invalid("must be true or false", node)


def plain(node: Node) -> Any:
    """The node as plain Python data (for inline JWKs)."""
    if isinstance(node, Mapping):
        return {key.text: plain(value) for key, value in node.items}
    if isinstance(node, Sequence):
        return [plain(item) for item in node.items]
    if isinstance(node.value, float) and not math.isfinite(node.value):
        raise _Invalid("must be a finite number", node)
    return node.value


def _claims_to_headers(node: Node) -> tuple[tuple[str, str], ...]:
    if not isinstance(node, Mapping):
        raise _Invalid("must map claim names to header names, like {email: x-user-email}", node)
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for key, value in node.items:
        header = _string(value).lower()
        if not _HEADER_NAME.fullmatch(header):
            raise _Invalid(f"{header!r} is not a valid HTTP header name", value)
        if header in RESERVED_HEADERS or header.startswith(("x-pavilion-", ":")):
            raise _Invalid(f"header {header!r} is reserved and cannot carry a claim", value)
        if header in seen:
            raise _Invalid(f"header {header!r} is given to two claims", value)
        seen.add(header)
        pairs.append((key.text, header))
    return tuple(pairs)


def _absolute(path: Path) -> str:
    """An absolute path that keeps its symlinks: a key file in a Kubernetes ConfigMap is reached
    through `..data`, which a swap repoints; resolving it would pin the timestamped folder that the
    next swap deletes (and make two control-plane replicas send different paths)."""
    return os.path.normpath(os.path.abspath(path))


def _jwks(node: Node, base_dir: Path, path: str, errors: list[ConfigError]) -> JwksSource | None:
    if not isinstance(node, Mapping):
        errors.append(ConfigError("must be a mapping with one of inline, file, uri, discovery",
                                  location=node.loc, path=path))
        return None
    fields = _fields(node, _JWKS_FIELDS, path, errors)
    kwargs: dict[str, Any] = {}
    readers: dict[str, Callable[[Node], Any]] = {
        "uri": _string, "discovery": _string, "max_bytes": _int, "max_keys": _int, "allow_http_loopback": _bool,
        **{name: _seconds for name in _JWKS_DURATIONS},
        "inline": plain, "file": lambda n: _absolute(base_dir / _string(n)),
    }
    for name, value in fields.items():
        try:
            kwargs[name] = readers[name](value)
        except _Invalid as exc:
            errors.append(ConfigError(str(exc), location=exc.node.loc, path=f"{path}.{name}"))
            return None
    try:
        return JwksSource(**kwargs)
    except ConfigError as exc:
        field = exc.path.rsplit(".", 1)[-1]
        where = f"{path}.{field}" if field in fields else path
        errors.append(ConfigError(exc.message, location=(fields.get(field) or node).loc, path=where))
        return None


def _policy(node: Node, build: Callable[..., Any], readers: dict[str, Callable[[Node], Any]], shape: str,
            required: tuple[str, ...] = ()) -> Any:
    """`build(**fields)` of a nested mapping (a tenant's `dpop`, `introspection`), each field read by its reader;
    _Invalid naming the field (`.max_age`) at its node, for an unknown, repeated, missing or bad field."""
    if not isinstance(node, Mapping):
        raise _Invalid(f"must be a mapping with {shape}", node)
    fields: dict[str, Node] = {}
    for key, value in node.items:
        if key.text not in readers:
            raise _Invalid(f"unknown field; expected one of {', '.join(sorted(readers))}", value, f".{key.text}")
        if key.text in fields:
            raise _Invalid("field given twice", value, f".{key.text}")
        fields[key.text] = value
    for name in required:
        if name not in fields:
            raise _Invalid(f"missing required field `{name}`", node)
    kwargs: dict[str, Any] = {}
    for name, value in fields.items():
        try:
            kwargs[name] = readers[name](value)
        except _Invalid as exc:
            raise _Invalid(str(exc), exc.node, f".{name}") from None
    try:
        return build(**kwargs)
    except ConfigError as exc:
        name = exc.path.rsplit(".", 1)[-1]
        raise _Invalid(exc.message, fields.get(name, node), f".{name}") from None


def _dpop(node: Node) -> DpopPolicy:
    readers: dict[str, Callable[[Node], Any]] = {"required": _bool, "max_age": _seconds, "algorithms": _strings,
                                                 "nonce": _bool}
    policy: DpopPolicy = _policy(node, DpopPolicy, readers, "required, max_age, algorithms, nonce")
    return policy


def _introspection(node: Node, base_dir: Path) -> IntrospectionPolicy:
    readers: dict[str, Callable[[Node], Any]] = {
        "endpoint": _string, "client_id": _string, "client_secret_file": lambda n: _absolute(base_dir / _string(n)),
        "cache": _seconds, "negative_cache": _seconds, "timeout": _seconds, "allow_http_loopback": _bool,
    }
    # IntrospectionPolicy reads the secret file
    policy: IntrospectionPolicy = _policy(node, IntrospectionPolicy, readers,
                                          "endpoint, client_id, client_secret_file, ...",
                                          required=("client_id", "client_secret_file"))
    return policy


def read_tenant(node: Node, path: str, base_dir: Path, errors: list[ConfigError]) -> Tenant | None:
    """One tenant entry from its YAML node, or None with its problems appended to `errors`.

    The route YAML's `tenants:` entries are read by this same function (controlplane.config.tenants),
    so a tenant means the same thing in both files.
    """
    return _tenant(node, path, base_dir, errors)


def _tenant(node: Node, path: str, base_dir: Path, errors: list[ConfigError]) -> Tenant | None:
    if not isinstance(node, Mapping):
        errors.append(ConfigError("each tenant must be a mapping", location=node.loc, path=path))
        return None
    fields = _fields(node, _TENANT_FIELDS, path, errors)
    before = len(errors)
    for required in ("id", "issuer", "audiences"):
        if required not in fields:
            errors.append(ConfigError(f"missing required field `{required}`", location=node.loc, path=path))
    if "jwks" in fields and "discovery" in fields:
        errors.append(ConfigError("give exactly one of `jwks` or `discovery`", location=node.loc, path=path))
    elif "jwks" not in fields and "discovery" not in fields and "introspection" not in fields:
        errors.append(ConfigError("give exactly one of `jwks` or `discovery` (or `introspection` alone)",
                                  location=node.loc, path=path))
    if len(errors) > before:
        return None
    kwargs: dict[str, Any] = {}
    readers: dict[str, Callable[[Node], Any]] = {
        "id": _string, "issuer": _string, "audiences": _strings, "algorithms": _strings,
        "clock_skew": _seconds, "max_lifetime": _seconds, "claims_to_headers": _claims_to_headers,
        "on_store_error": _string, "token_type": _string, "max_token_bytes": _int, "dpop": _dpop,
        "introspection": lambda n: _introspection(n, base_dir),
    }
    for name, value in fields.items():
        if name in readers:
            try:
                kwargs[name] = readers[name](value)
            except _Invalid as exc:
                errors.append(ConfigError(str(exc), location=exc.node.loc, path=f"{path}.{name}{exc.field}"))
    if "id" in kwargs and not _TENANT_ID.fullmatch(kwargs["id"]):
        errors.append(ConfigError("tenant id must be lower-case letters, digits, '.', '_' or '-' (at most 63)",
                                  location=fields["id"].loc, path=f"{path}.id"))
    if "discovery" in fields:
        jwks = _jwks(Mapping(((Key("discovery", fields["discovery"].loc), fields["discovery"]),), node.loc),
                     base_dir, path, errors)
    elif "jwks" not in fields:
        jwks = JwksSource(inline=NO_KEYS)  # introspection only
    else:
        jwks = _jwks(fields["jwks"], base_dir, f"{path}.jwks", errors)
    if len(errors) > before or jwks is None:
        return None
    try:
        return Tenant(jwks=jwks, **kwargs)
    except ConfigError as exc:
        field = exc.path.rsplit(".", 1)[-1]
        if ".introspection." in exc.path:
            field = f"introspection.{field}"
            errors.append(ConfigError(exc.message, location=fields["introspection"].loc, path=f"{path}.{field}"))
            return None
        errors.append(ConfigError(exc.message, location=(fields.get(field) or node).loc, path=f"{path}.{field}"))
        return None


def _check_unique(tenants: list[tuple[Tenant, Node]], errors: list[ConfigError]) -> None:
    ids: set[str] = set()
    issuers: set[str] = set()
    for tenant, node in tenants:
        if tenant.id in ids:
            errors.append(ConfigError(f"tenant id {tenant.id!r} is used twice", location=node.loc, path="tenants"))
        # One issuer, one tenant: the issuer is how a token without route context finds its tenant.
        if tenant.issuer in issuers:
            errors.append(ConfigError(f"issuer {tenant.issuer!r} belongs to two tenants", location=node.loc,
                                      path="tenants"))
        ids.add(tenant.id)
        issuers.add(tenant.issuer)
