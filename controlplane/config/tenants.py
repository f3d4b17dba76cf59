"""`tenants:` entries of the route YAML, read by the ext_authz tenant parser itself.

One parser for a tenant entry (extauthz.config.read_tenant): a tenant written in the route YAML and
one in ext_authz's own file accept the same fields, defaults and checks, and give the same errors.
`jwks: {file: PATH}` is relative to the YAML file that names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from extauthz.config import read_tenant
from extauthz.tenant import Tenant
from pavilion.errors import ConfigError
from pavilion.yaml_nodes import Node

__all__ = ["TENANT_SCHEMA", "read_tenant_node"]

_DURATION = {"type": "string", "pattern": r"^\s*\d+(\.\d+)?(us|ms|s|m|h|d)\s*$"}
_STRINGS = {"oneOf": [{"type": "string", "minLength": 1},
                      {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}]}
_JWKS = {
    "type": "object",
    "description": "Where the tenant's public keys come from: exactly one of inline, file, uri, discovery.",
    "properties": {
        "inline": {"description": "A JWK Set: {keys: [...]} or a list of JWKs."},
        "file": {"type": "string", "description": "A JWK Set file, relative to this YAML file."},
        "uri": {"type": "string", "description": "An https URL serving the JWK Set."},
        "discovery": {"type": "string", "description": "An OpenID discovery URL naming jwks_uri."},
        **{name: _DURATION for name in ("timeout", "refresh", "min_refresh", "max_refresh", "cooldown", "error_retry")},
        "max_bytes": {"type": "integer", "minimum": 1},
        "max_keys": {"type": "integer", "minimum": 1},
        "allow_http_loopback": {"type": "boolean"},
    },
    "additionalProperties": False,
    "oneOf": [{"required": [name]} for name in ("inline", "file", "uri", "discovery")],
}

_ALGORITHM = {"enum": ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]}
_DPOP = {
    "type": "object",
    "description": "DPoP (RFC 9449) proofs: required refuses unbound bearer tokens; max_age after the proof's iat.",
    "properties": {
        "required": {"type": "boolean"},
        "nonce": {"type": "boolean", "description": "Proofs must carry a nonce ext_authz issued (DPoP-Nonce)."},
        "max_age": _DURATION,
        "algorithms": {"oneOf": [_ALGORITHM, {"type": "array", "minItems": 1, "items": _ALGORITHM}]},
    },
    "additionalProperties": False,
}

_INTROSPECTION = {
    "type": "object",
    "description": "OAuth 2.0 Token Introspection (RFC 7662) for opaque tokens; the secret is read from a file.",
    "properties": {
        "endpoint": {"type": "string", "description": "Omitted: the discovery document's introspection_endpoint."},
        "client_id": {"type": "string", "minLength": 1},
        "client_secret_file": {"type": "string", "description": "Relative to this YAML file; never shown."},
        "cache": _DURATION,
        "negative_cache": _DURATION,
        "timeout": _DURATION,
        "allow_http_loopback": {"type": "boolean"},
    },
    "required": ["client_id", "client_secret_file"],
    "additionalProperties": False,
}

# For editors; the loader's checks are extauthz.config's (test_schema keeps the field names in step).
TENANT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A tenant: an issuer whose tokens ext_authz accepts (see the Tenants section).",
    "properties": {
        "id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,62}$"},
        "issuer": {"type": "string", "minLength": 1},
        "audiences": _STRINGS,
        "algorithms": _STRINGS,
        "jwks": _JWKS,
        "discovery": {"type": "string"},
        "clock_skew": _DURATION,
        "max_lifetime": _DURATION,
        "claims_to_headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "on_store_error": {"enum": ["deny", "allow"]},
        "token_type": {"type": "string", "minLength": 1},
        "max_token_bytes": {"type": "integer", "minimum": 256, "maximum": 1048576},
        "dpop": _DPOP,
        "introspection": _INTROSPECTION,
    },
    "required": ["id", "issuer", "audiences"],
    "additionalProperties": False,
    # Keys from jwks or discovery (never both); neither only for a tenant that introspects every token.
    "not": {"required": ["jwks", "discovery"]},
    "anyOf": [{"required": ["jwks"]}, {"required": ["discovery"]}, {"required": ["introspection"]}],
}


def read_tenant_node(node: Node, path: str, errors: list[ConfigError]) -> Tenant | None:
    """A `tenants:` entry (a `Custom` kind's reader); `path` is like `tenants[acme]`."""
    return read_tenant(node, path, Path(node.loc.file).parent, errors)
