"""Rules from the control plane: `pavilion.v1.RateLimitPolicy` messages (one per domain) → RateLimitConfig.

Checked like a config file (ratelimit/config_load.py): unknown units, algorithms or backend-error
policies, and two rules on one descriptor path, refuse the whole update with a ConfigError naming
the domain and the rule; the last good config keeps serving.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pavilion.errors import ConfigError, ConfigErrors, Location
from pavilion.v1 import ratelimit_pb2
from ratelimit.matching import KeyPath, RateLimitConfig
from ratelimit.rules import ALGORITHMS, FIXED_WINDOW, ON_BACKEND_ERROR, UNIT_SECONDS, Limit, Rule

__all__ = ["config_from_policies", "rules_from_policy"]


def _key_path(entries: Sequence[ratelimit_pb2.KeyPathEntry]) -> KeyPath:
    path = tuple((entry.key, entry.value if entry.HasField("value") else None) for entry in entries)
    if not path or not all(key for key, _value in path):
        raise ConfigError("a key path needs at least one entry, each with a key", path="key_path")
    return path


def _limit(message: ratelimit_pb2.Limit, where: str) -> Limit:
    if message.unit not in UNIT_SECONDS:
        raise ConfigError(f"unit {message.unit!r} is not one of {', '.join(UNIT_SECONDS)}", path=f"{where}.unit")
    algorithm = message.algorithm or FIXED_WINDOW
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}", path=f"{where}.algorithm")
    return Limit(unit=message.unit, requests_per_unit=message.requests_per_unit,
                 unit_multiplier=message.unit_multiplier or 1, algorithm=algorithm, burst=message.burst,
                 name=message.name if message.HasField("name") else None)


def _rule(domain: str, message: ratelimit_pb2.RateLimitRule, where: str) -> Rule:
    on_error = message.on_backend_error or "allow"
    if on_error not in ON_BACKEND_ERROR:
        raise ConfigError(f"on_backend_error {on_error!r} is not one of {', '.join(ON_BACKEND_ERROR)}",
                          path=f"{where}.on_backend_error")
    if message.unlimited == bool(message.limits):
        raise ConfigError("a rule is either unlimited or has limits", path=where)
    key_path = _key_path(message.key_path)
    for depth in message.share_threshold:
        value = key_path[depth][1] if depth < len(key_path) else None
        if value is None or not value.endswith("*"):
            raise ConfigError(f"share_threshold depth {depth} is not a wildcard level of the key path",
                              path=f"{where}.share_threshold")
    if any(depth >= len(key_path) for depth in message.value_to_metric):
        raise ConfigError("a value_to_metric depth is past the key path", path=f"{where}.value_to_metric")
    return Rule(
        domain=domain, key_path=key_path,
        limits=tuple(_limit(limit, f"{where}.limits[{i}]") for i, limit in enumerate(message.limits)),
        unlimited=message.unlimited, shadow_mode=message.shadow_mode, replaces=tuple(message.replaces),
        detailed_metric=message.detailed_metric, name=message.name if message.HasField("name") else None,
        on_backend_error=on_error, share_threshold=tuple(message.share_threshold),
        value_to_metric=tuple(message.value_to_metric), source=Location(f"xds:RateLimitPolicy/{domain}"))


def rules_from_policy(message: ratelimit_pb2.RateLimitPolicy) -> tuple[Rule, ...]:
    return tuple(_rule(message.domain, rule, f"rules[{i}]") for i, rule in enumerate(message.rules))


def config_from_policies(policies: Mapping[str, ratelimit_pb2.RateLimitPolicy]) -> RateLimitConfig:
    """The config of an update (resource name → policy); ConfigErrors listing every problem."""
    errors: list[ConfigError] = []
    rules: list[Rule] = []
    placeholders: list[tuple[str, KeyPath]] = []
    for name in sorted(policies):
        policy = policies[name]
        where = Location(f"xds:RateLimitPolicy/{name}")
        if policy.domain != name or not name:
            errors.append(ConfigError(f"resource name differs from the domain {policy.domain!r}", location=where,
                                      path="domain"))
            continue
        try:
            rules.extend(rules_from_policy(policy))
            placeholders.extend((name, _key_path(path.entries)) for path in policy.placeholders)
        except ConfigError as exc:
            errors.append(ConfigError(exc.message, location=where, path=exc.path))
    if not errors:
        try:
            config = RateLimitConfig(rules, placeholders=placeholders)
        except ValueError as exc:  # two rules on one descriptor path
            errors.append(ConfigError(str(exc), location=Location("xds:RateLimitPolicy")))
    if errors:
        raise ConfigErrors(errors)
    for name in policies:
        config.add_domain(name)
    return config
