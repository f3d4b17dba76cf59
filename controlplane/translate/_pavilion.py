"""The route YAML model → Pavilion's own resources (protos/pavilion/v1) for ext_authz and ratelimit nodes.

One `TenantPolicy` per tenant, named by its id, and one `RateLimitPolicy` per ratelimit domain, named by
the domain: with Delta xDS an edit re-sends only the tenant or domain it touched. Pure, like the rest
of translate/; the other direction lives beside its user (extauthz/tenant_proto.py, ratelimit/rules_proto.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import duration_pb2
from google.protobuf.message import Message

from controlplane import resources as urls
from controlplane.config.model import Config
from controlplane.translate._ratelimit import ratelimit_config
from extauthz.tenant import DpopPolicy, JwksSource, Tenant
from pavilion.v1 import ratelimit_pb2, tenant_pb2
from ratelimit.matching import RateLimitConfig
from ratelimit.rules import Limit, Rule

__all__ = [
    "EXTAUTHZ_ROLE", "PAVILION_ROLES", "RATELIMIT_ROLE", "duration", "pavilion_resources",
    "rate_limit_policies", "tenant_policy",
]

EXTAUTHZ_ROLE = "extauthz"
RATELIMIT_ROLE = "ratelimit"
# Node roles that are Pavilion services, not Envoy: they get their own types and no Envoy resources.
PAVILION_ROLES = {EXTAUTHZ_ROLE: urls.TENANT_POLICY, RATELIMIT_ROLE: urls.RATE_LIMIT_POLICY}


def pavilion_resources(config: Config, role: str) -> dict[str, list[Message]]:
    """What a node of a Pavilion role gets: its one type, every resource sorted by name."""
    if role == EXTAUTHZ_ROLE:
        return {urls.TENANT_POLICY: [tenant_policy(t) for t in sorted(config.tenants, key=lambda t: t.id)]}
    if role == RATELIMIT_ROLE:
        return {urls.RATE_LIMIT_POLICY: list(rate_limit_policies(ratelimit_config(config)))}
    raise ValueError(f"{role!r} is not a Pavilion service role")


def duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(round(seconds * 1e9))
    return value


def _jwks(source: JwksSource) -> tenant_pb2.JwksSource:
    message = tenant_pb2.JwksSource(
        timeout=duration(source.timeout), refresh=duration(source.refresh),
        min_refresh=duration(source.min_refresh), max_refresh=duration(source.max_refresh),
        cooldown=duration(source.cooldown), error_retry=duration(source.error_retry),
        max_bytes=source.max_bytes, max_keys=source.max_keys, allow_http_loopback=source.allow_http_loopback)
    setattr(message, source.kind, getattr(source, source.kind))
    return message


def tenant_policy(tenant: Tenant) -> tenant_pb2.TenantPolicy:
    message = tenant_pb2.TenantPolicy(
        id=tenant.id, issuer=tenant.issuer, audiences=tenant.audiences, algorithms=tenant.algorithms,
        jwks=_jwks(tenant.jwks), clock_skew=duration(tenant.clock_skew), max_lifetime=duration(tenant.max_lifetime),
        claims_to_headers=[tenant_pb2.ClaimHeader(claim=c, header=h) for c, h in tenant.claims_to_headers],
        on_store_error=tenant.on_store_error, max_token_bytes=tenant.max_token_bytes)
    if tenant.token_type is not None:
        message.token_type = tenant.token_type
    if tenant.dpop != DpopPolicy():  # only when set: tenants without DPoP keep their resource bytes
        dpop = tenant.dpop
        message.dpop.CopyFrom(tenant_pb2.DpopPolicy(required=dpop.required, max_age=duration(dpop.max_age),
                                                    algorithms=dpop.algorithms, nonce=dpop.nonce))
    if tenant.introspection is not None:  # the secret stays out: ext_authz reads client_secret_file itself
        policy = tenant.introspection
        message.introspection.CopyFrom(tenant_pb2.IntrospectionPolicy(
            endpoint=policy.endpoint or "", client_id=policy.client_id, client_secret_file=policy.client_secret_file,
            cache=duration(policy.cache), negative_cache=duration(policy.negative_cache),
            timeout=duration(policy.timeout), allow_http_loopback=policy.allow_http_loopback))
    return message


def _entries(key_path: Iterable[tuple[str, str | None]]) -> list[ratelimit_pb2.KeyPathEntry]:
    entries = []
    for key, value in key_path:
        entry = ratelimit_pb2.KeyPathEntry(key=key)
        if value is not None:
            entry.value = value
        entries.append(entry)
    return entries


def _limit(limit: Limit) -> ratelimit_pb2.Limit:
    message = ratelimit_pb2.Limit(unit=limit.unit, requests_per_unit=limit.requests_per_unit,
                                  unit_multiplier=limit.unit_multiplier, algorithm=limit.algorithm, burst=limit.burst)
    if limit.name is not None:
        message.name = limit.name
    return message


def _rule(rule: Rule) -> ratelimit_pb2.RateLimitRule:
    message = ratelimit_pb2.RateLimitRule(
        key_path=_entries(rule.key_path), limits=[_limit(limit) for limit in rule.limits], unlimited=rule.unlimited,
        shadow_mode=rule.shadow_mode, replaces=rule.replaces, detailed_metric=rule.detailed_metric,
        on_backend_error=rule.on_backend_error, share_threshold=rule.share_threshold,
        value_to_metric=rule.value_to_metric)
    if rule.name is not None:
        message.name = rule.name
    return message


def rate_limit_policies(config: RateLimitConfig,
                        placeholders: Iterable[tuple[str, tuple[tuple[str, str | None], ...]]] = ()
                        ) -> list[ratelimit_pb2.RateLimitPolicy]:
    """One policy per domain of `config` (a domain without rules too), sorted by domain; rules keep their order."""
    policies = {domain: ratelimit_pb2.RateLimitPolicy(domain=domain) for domain in sorted(config.domains)}
    for rule in config.rules:
        policies.setdefault(rule.domain, ratelimit_pb2.RateLimitPolicy(domain=rule.domain)).rules.append(_rule(rule))
    for domain, key_path in placeholders:
        policies.setdefault(domain, ratelimit_pb2.RateLimitPolicy(domain=domain)).placeholders.append(
            ratelimit_pb2.KeyPath(entries=_entries(key_path)))
    return [policies[domain] for domain in sorted(policies)]
