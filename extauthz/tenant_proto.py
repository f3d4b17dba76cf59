"""Tenants from the control plane: `pavilion.v1.TenantPolicy` messages → frozen `Tenant`s.

The same checks as a tenant file (extauthz/config.py): a tenant is refused with a ConfigError naming
the resource and the field, and one bad tenant refuses the whole update (the last good set keeps
serving). An unset field takes the `Tenant` default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from google.protobuf import duration_pb2

from extauthz.config import _HEADER_NAME, _TENANT_ID, RESERVED_HEADERS
from extauthz.tenant import DEFAULT_DPOP_ALGORITHMS, DpopPolicy, IntrospectionPolicy, JwksSource, Tenant
from pavilion.errors import ConfigError, ConfigErrors, Location
from pavilion.v1 import tenant_pb2

__all__ = ["tenant_from_policy", "tenants_from_policies"]

_JWKS_DURATIONS: tuple[Literal["timeout", "refresh", "min_refresh", "max_refresh", "cooldown", "error_retry"], ...] = (
    "timeout", "refresh", "min_refresh", "max_refresh", "cooldown", "error_retry")


def _seconds(value: duration_pb2.Duration) -> float:
    return float(value.ToNanoseconds()) / 1e9


def _jwks(message: tenant_pb2.JwksSource) -> JwksSource:
    kind = message.WhichOneof("source")
    if kind is None:
        raise ConfigError("give exactly one of inline, file, uri, discovery", path="jwks")
    kwargs: dict[str, Any] = {kind: getattr(message, kind), "allow_http_loopback": message.allow_http_loopback}
    kwargs.update({name: _seconds(getattr(message, name)) for name in _JWKS_DURATIONS if message.HasField(name)})
    kwargs.update({name: getattr(message, name) for name in ("max_bytes", "max_keys") if getattr(message, name)})
    return JwksSource(**kwargs)


def _claims_to_headers(message: tenant_pb2.TenantPolicy) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for entry in message.claims_to_headers:
        header = entry.header.lower()
        if not entry.claim or not _HEADER_NAME.fullmatch(header):
            raise ConfigError(f"{entry.claim!r} -> {header!r} is not a claim and a valid HTTP header name",
                              path="claims_to_headers")
        if header in RESERVED_HEADERS or header.startswith(("x-pavilion-", ":")) or header in seen:
            raise ConfigError(f"header {header!r} is reserved or given to two claims", path="claims_to_headers")
        seen.add(header)
        pairs.append((entry.claim, header))
    return tuple(pairs)


def _dpop(message: tenant_pb2.DpopPolicy) -> DpopPolicy:
    try:
        return DpopPolicy(required=message.required, nonce=message.nonce,
                          max_age=_seconds(message.max_age) if message.HasField("max_age") else 60.0,
                          algorithms=tuple(message.algorithms) or DEFAULT_DPOP_ALGORITHMS)
    except ConfigError as exc:
        raise ConfigError(exc.message, path=f"dpop.{exc.path.rsplit('.', 1)[-1]}") from None


def _introspection(message: tenant_pb2.IntrospectionPolicy) -> IntrospectionPolicy:
    """The policy, its secret read from the file the message names (the secret itself never travels)."""
    kwargs: dict[str, Any] = {"client_id": message.client_id, "client_secret_file": message.client_secret_file,
                              "endpoint": message.endpoint or None, "allow_http_loopback": message.allow_http_loopback}
    for name in ("cache", "negative_cache", "timeout"):
        if message.HasField(name):
            kwargs[name] = _seconds(getattr(message, name))
    try:
        return IntrospectionPolicy(**kwargs)
    except ConfigError as exc:
        raise ConfigError(exc.message, path=f"introspection.{exc.path.rsplit('.', 1)[-1]}") from None


def tenant_from_policy(message: tenant_pb2.TenantPolicy) -> Tenant:
    """One tenant; ConfigError (its `path` names the field) when the policy is not a valid tenant."""
    if not _TENANT_ID.fullmatch(message.id):
        raise ConfigError("tenant id must be lower-case letters, digits, '.', '_' or '-' (at most 63)", path="id")
    if not message.HasField("jwks"):
        raise ConfigError("missing jwks", path="jwks")
    kwargs: dict[str, Any] = {
        "id": message.id, "issuer": message.issuer, "audiences": tuple(message.audiences),
        "jwks": _jwks(message.jwks), "claims_to_headers": _claims_to_headers(message),
    }
    if message.algorithms:
        kwargs["algorithms"] = tuple(message.algorithms)
    for name in ("clock_skew", "max_lifetime"):
        if message.HasField(name):
            kwargs[name] = _seconds(getattr(message, name))
    if message.on_store_error:
        kwargs["on_store_error"] = message.on_store_error
    if message.HasField("token_type"):
        kwargs["token_type"] = message.token_type
    if message.max_token_bytes:
        kwargs["max_token_bytes"] = message.max_token_bytes
    if message.HasField("dpop"):
        kwargs["dpop"] = _dpop(message.dpop)
    if message.HasField("introspection"):
        kwargs["introspection"] = _introspection(message.introspection)
    return Tenant(**kwargs)


def tenants_from_policies(policies: Mapping[str, tenant_pb2.TenantPolicy]) -> tuple[Tenant, ...]:
    """Every tenant of an update (resource name → policy), sorted by id; ConfigErrors listing every bad one."""
    errors: list[ConfigError] = []
    tenants: list[Tenant] = []
    issuers: dict[str, str] = {}
    for name in sorted(policies):
        where = Location(f"xds:TenantPolicy/{name}")
        try:
            tenant = tenant_from_policy(policies[name])
        except ConfigError as exc:
            nested = ".introspection." in f".{exc.path}"
            field = ".".join(exc.path.rsplit(".", 2)[-2:]) if nested else exc.path.rsplit(".", 1)[-1]
            errors.append(ConfigError(exc.message, location=where, path=field))
            continue
        if tenant.id != name:
            errors.append(ConfigError(f"resource name differs from the tenant id {tenant.id!r}", location=where,
                                      path="id"))
        elif tenant.issuer in issuers:
            errors.append(ConfigError(f"issuer {tenant.issuer!r} belongs to two tenants ({issuers[tenant.issuer]})",
                                      location=where, path="issuer"))
        else:
            issuers[tenant.issuer] = tenant.id
            tenants.append(tenant)
    if errors:
        raise ConfigErrors(errors)
    return tuple(tenants)
